-- A one-row bypass UPDATE flipping a cashout's status (capture on or off), for pgbench
-- on a database seeded by bench/capture.py (its first 30 cashouts).
\set id random(1, 30)
UPDATE cashouts SET status = CASE status WHEN 'EXECUTING' THEN 'AWAITING_RESPONSE' ELSE 'EXECUTING' END WHERE id = :id;
