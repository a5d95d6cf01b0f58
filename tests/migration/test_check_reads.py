"""What `unistatus check` reads per key range (BENCHMARKS.md, "Issue 14").

One read of a range counts it and names its recent inconsistent pairs (the ones to
re-check) and where its inconsistent pairs are; when every inconsistent pair is recent,
the examples and --out come from the re-check, not from a second read of the range, and
otherwise the examples alone are read from where the count located them. PostgreSQL plans the range statements
without JIT and commits each position asynchronously. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support.check_data import damage, populate, tables
from unistatus.clock import utcnow
from unistatus.config import load_settings
from unistatus.db.dialect import ops_for
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import ConfigError
from unistatus.migration.check import iter_inconsistent, run_check
from unistatus.migration.check_sql import (
    SPOTS,
    Spot,
    chunk_keys,
    count_chunk,
    example_window,
    pair_flags,
)

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


NO_JIT = "set_config('jit', 'off', true)"


def test_postgres_ranges_run_without_jit_and_commit_positions_asynchronously(
    db: Any, tmp_path: Path
) -> None:
    populate(db.engine, db.settings, N)
    _, seen, _ = _run(db, tmp_path / "out.jsonl")
    no_jit = [s for s in seen if NO_JIT in s]
    # The counting statements' hash tables get check_work_mem_mb (64 MB by default).
    hashed = [s for s in no_jit if "set_config('work_mem', '64MB', true)" in s]
    # synchronous_commit off, bound
    async_commit = [s for s in seen if "set_config(" in s and NO_JIT not in s]
    if db.engine.dialect.name == "postgresql":
        assert len(no_jit) >= len(range_reads(seen)) == 9
        assert len(hashed) == 9
        assert len(async_commit) == 9  # one per committed position
    else:
        assert no_jit == [] and async_commit == []


def test_planning_for_scans_lasts_one_transaction(db: Any) -> None:
    ops = ops_for(db.engine)
    with db.engine.connect() as conn:
        if db.engine.dialect.name != "postgresql":
            ops.plan_for_scans(conn, 64)  # nothing to set
            return
        before = conn.exec_driver_sql("SHOW jit").scalar_one()
        memory = conn.exec_driver_sql("SHOW work_mem").scalar_one()
        ops.plan_for_scans(conn, 64)
        assert conn.exec_driver_sql("SHOW jit").scalar_one() == "off"
        assert conn.exec_driver_sql("SHOW work_mem").scalar_one() == "64MB"
        conn.rollback()
        assert conn.exec_driver_sql("SHOW jit").scalar_one() == before
        assert conn.exec_driver_sql("SHOW work_mem").scalar_one() == memory
        ops.plan_for_scans(conn)  # 0: the server's work_mem
        assert conn.exec_driver_sql("SHOW work_mem").scalar_one() == memory
        conn.rollback()


def test_repair_detection_reads_ranges_without_jit_too(db: Any) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    lt = tables(db.engine, db.settings)[LegacySystemType.CASHOUT]
    with statements(db.engine) as seen:
        chunks = list(iter_inconsistent(db.engine, lt, chunk=CHUNK))
    found = sorted(r.legacy_id for rows in chunks for r in rows if r.legacy_id is not None)
    report = run_check(db.engine, db.settings, systems="cashout", store=False)
    assert len(found) == report.total - report.consistent
    no_jit = [s for s in seen if NO_JIT in s]
    assert len(no_jit) == (len(chunks) if db.engine.dialect.name == "postgresql" else 0)


@contextmanager
def statements_with_values(engine: sa.Engine) -> Iterator[list[tuple[str, list[Any]]]]:
    seen: list[tuple[str, list[Any]]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        values = list(parameters.values()) if isinstance(parameters, dict) else list(parameters)
        seen.append((" ".join(statement.split()), values))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def test_the_examples_of_old_mismatches_are_read_from_where_the_count_found_them(
    db: Any,
) -> None:
    """Without --out, a range's examples are read from the few keys its counting
    statement located them in, not from the whole range a second time."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)  # ids ending in 1 to 5 of every system, not recent
    with statements_with_values(db.engine) as seen:
        report = run_check(db.engine, db.settings, systems="cashout", chunk=N, examples=4)
    assert [e["legacy_id"] for e in report.examples] == [1, 2, 3, 4]
    reads = [(s, v) for s, v in seen if s in range_reads([s])]
    counting = [v for s, v in reads if "GROUP BY" in s]
    examples = [v for s, v in reads if "GROUP BY" not in s]
    assert len(counting) == 1 and len(examples) == 1  # one range (every key), one window
    assert 4 in examples[0] and N not in examples[0]  # the window (0, 4], not (0, 60]


def test_the_count_locates_every_inconsistent_pair(db: Any) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    lt = tables(db.engine, db.settings)[LegacySystemType.ESCROW]
    found = sorted(
        r.legacy_id for rows in iter_inconsistent(db.engine, lt) for r in rows if r.legacy_id
    )
    with db.engine.connect() as conn:
        hi, span = chunk_keys(conn, lt, None, 10 * N)
        assert hi is None and span is not None
        counts, _recent, spots = count_chunk(conn, pair_flags(lt), utcnow(), span)
    assert sum(s.n for s in spots) == counts["total"] - counts["ok"] == len(found)

    def holds(s: Spot, k: int) -> bool:
        return (s.after is None or s.after < k) and (s.upto is None or k <= s.upto)

    assert all(sum(holds(s, k) for s in spots) == 1 for k in found)  # in exactly one
    # A slice a key wide (60 keys, 1024 slices); the first one open below, as the range.
    assert [(s.after, s.upto) for s in spots[1:4]] == [(k - 1, k) for k in found[1:4]]
    assert example_window(spots, 3) == (None, found[2])
    assert example_window(spots, 10 * N) == (None, found[-1])
    assert example_window([], 3) is None


def test_a_slice_holds_many_keys_when_the_range_is_wide(db: Any) -> None:
    """At most SPOTS slices however many pairs are inconsistent (one group each in the
    counting statement); a slice then spans several keys."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    lt = tables(db.engine, db.settings)[LegacySystemType.CASHOUT]
    with db.engine.connect() as conn:
        span = (1, SPOTS * 4 * N)  # as if the range's keys went that far: 4N keys a slice
        counts, _recent, spots = count_chunk(conn, pair_flags(lt), utcnow(), span)
    assert len(spots) == 1 and spots[0].n == counts["total"] - counts["ok"]


def test_chunk_keys_walks_the_keys_only_when_a_chunk_may_end_before_them(db: Any) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)  # ids ending in 5 deleted: gaps in the keys
    lt = tables(db.engine, db.settings)[LegacySystemType.EXCHANGE]
    with db.engine.connect() as conn:
        ids = sorted(int(k) for k in conn.execute(sa.select(lt.id)).scalars())
        for lo in (None, 0, 7, 24, 25, 50, 59, 60, 99):
            for chunk in (1, 9, 10, 25, 53, 54, 55, 60, 1000):
                rest = [k for k in ids if lo is None or k > lo]
                expected_hi = rest[chunk - 1] if len(rest) >= chunk else None
                expected_span = (rest[0], rest[:chunk][-1]) if rest else None
                assert chunk_keys(conn, lt, lo, chunk) == (expected_hi, expected_span)
    with statements(db.engine) as seen, db.engine.connect() as conn:
        assert chunk_keys(conn, lt, 50, 25) == (None, (51, 60))  # 51..60: under one chunk
        assert chunk_keys(conn, lt, None, 25)[0] == ids[24]  # 1..60: walked
    walks = [s for s in seen if "LIMIT" in s]
    assert len(walks) == 1, seen


def test_the_check_work_mem_is_a_setting_with_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().check_work_mem_mb == 64
    monkeypatch.setenv("UNISTATUS_CHECK_WORK_MEM_MB", "0")
    assert load_settings().check_work_mem_mb == 0
    monkeypatch.setenv("UNISTATUS_CHECK_WORK_MEM_MB", "-1")
    with pytest.raises(ConfigError, match="check_work_mem_mb"):
        load_settings()
