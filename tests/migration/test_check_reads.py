"""What `unistatus check` reads per key range (BENCHMARKS.md, "Issue 14").

One read of a range counts it and names its recent inconsistent pairs (the ones to
re-check); when every inconsistent pair is recent, the examples and --out come from the
re-check, not from a second read of the range. PostgreSQL plans the range statements
without JIT and commits each position asynchronously. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from support.check_data import damage, populate, tables
from unistatus.clock import utcnow
from unistatus.db.dialect import ops_for
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.check import iter_inconsistent, run_check

N = 60
CHUNK = 25  # three ranges per system: 1-25, 26-50, 51-60 and above


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def range_reads(seen: list[str]) -> list[str]:
    """Statements that read a whole key range (the re-check reads keys: ``legacy_id IN``)."""
    pairs = [s for s in seen if "UNION ALL" in s and "unified_transactions" in s]
    return [s for s in pairs if "legacy_id IN (" not in s]


def _run(db: Any, out: Path) -> tuple[Any, list[str], list[dict[str, Any]]]:
    with statements(db.engine) as seen:
        report = run_check(db.engine, db.settings, chunk=CHUNK, examples=4, out=out)
    return report, seen, [json.loads(line) for line in out.read_text().splitlines()]


def _mismatches(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((r["system"], r["legacy_id"], tuple(r["kinds"])) for r in records)


def test_a_range_with_only_recent_mismatches_is_read_once(db: Any, tmp_path: Path) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    old, old_seen, old_out = _run(db, tmp_path / "old.jsonl")  # mismatches dated T1
    ranges = sum(s["ranges"] for s in old.per_system.values())
    assert ranges == 9
    # Not recent: nothing to re-check; the examples and --out read the range again.
    assert len(range_reads(old_seen)) > ranges

    with db.engine.begin() as conn:  # every row just written: every mismatch is recent
        conn.execute(sa.update(U).values(updated_at=utcnow()))
        for lt in tables(db.engine, db.settings).values():
            conn.execute(sa.update(lt.table).values({lt.updated_at: utcnow()}))
    new, new_seen, new_out = _run(db, tmp_path / "new.jsonl")
    assert len(range_reads(new_seen)) == ranges  # counted and listed in one read each
    # The same answer either way: counts, examples (first keys first), --out lines.
    assert (new.total, new.consistent, new.inconsistencies) == (
        old.total,
        old.consistent,
        old.inconsistencies,
    )
    assert [(e["system"], e["legacy_id"], e["kinds"]) for e in new.examples] == [
        (e["system"], e["legacy_id"], e["kinds"]) for e in old.examples
    ]
    assert len(new.examples) == 4
    assert _mismatches(new_out) == _mismatches(old_out)
    assert len(new_out) == old.total - old.consistent


def test_postgres_ranges_run_without_jit_and_commit_positions_asynchronously(
    db: Any, tmp_path: Path
) -> None:
    populate(db.engine, db.settings, N)
    _, seen, _ = _run(db, tmp_path / "out.jsonl")
    no_jit = [s for s in seen if s == "SET LOCAL jit = off"]
    async_commit = [s for s in seen if "set_config(" in s]  # synchronous_commit off, bound
    if db.engine.dialect.name == "postgresql":
        assert len(no_jit) >= len(range_reads(seen)) == 9
        assert len(async_commit) == 9  # one per committed position
    else:
        assert no_jit == [] and async_commit == []


def test_without_jit_lasts_one_transaction(db: Any) -> None:
    ops = ops_for(db.engine)
    with db.engine.connect() as conn:
        if db.engine.dialect.name != "postgresql":
            ops.without_jit(conn)  # nothing to turn off
            return
        default = conn.exec_driver_sql("SHOW jit").scalar_one()
        ops.without_jit(conn)
        assert conn.exec_driver_sql("SHOW jit").scalar_one() == "off"
        conn.rollback()
        assert conn.exec_driver_sql("SHOW jit").scalar_one() == default


def test_repair_detection_reads_ranges_without_jit_too(db: Any) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    lt = tables(db.engine, db.settings)[LegacySystemType.CASHOUT]
    with statements(db.engine) as seen:
        chunks = list(iter_inconsistent(db.engine, lt, chunk=CHUNK))
    found = sorted(r.legacy_id for rows in chunks for r in rows if r.legacy_id is not None)
    report = run_check(db.engine, db.settings, systems="cashout", store=False)
    assert len(found) == report.total - report.consistent
    no_jit = [s for s in seen if s == "SET LOCAL jit = off"]
    assert len(no_jit) == (len(chunks) if db.engine.dialect.name == "postgresql" else 0)
