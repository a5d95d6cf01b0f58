-- LEGACY_ONLY's guarded write, by hand (bench/pgbench: see BENCHMARKS.md, "Variants").
\set id random(1, 200)
UPDATE cashouts SET status = CASE status WHEN 'EXECUTING' THEN 'AWAITING_RESPONSE' ELSE 'EXECUTING' END, updated_at = now() WHERE id = :id AND (SELECT unistatus_locked_mode()) IN ('DUAL_WRITE_LEGACY_PRIMARY', 'LEGACY_ONLY') RETURNING id;
