"""Adaptive batches on both backends: sizes follow the target duration, stay bounded,
and copy every row exactly once across an interruption and a resume.

The batches' duration comes from an injected timer that advances with the rows the
database has committed (``work_clock``): a batch of n rows takes exactly n times the
cost, whatever the machine's load, so the sizes are deterministic.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from support.backfill_data import inconsistencies
from unistatus.backfill import progress, read_workers, run_backfill
from unistatus.backfill.pacing import Clock
from unistatus.backfill.sizing import BAND, MAX_GROWTH
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_chunks as CH
from unistatus.db.tables_backfill import backfill_jobs as J
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError
from unistatus.sim.seed import seed_legacy

CASHOUT = [LegacySystemType.CASHOUT]


def work_clock(db: Any, ms_per_row: float) -> Clock:
    """Time that passes only as rows are copied: ``ms_per_row`` per committed row."""

    def timer() -> float:
        with db.engine.connect() as conn:
            done = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(CH.c.rows), 0)).where(CH.c.state == "done")
            ).scalar_one()
        return int(done) * ms_per_row / 1000.0

    return Clock(timer=timer, sleep=lambda seconds: None)


def batch_sizes(db: Any, **options: Any) -> tuple[list[int], Any]:
    """Run the cashout backfill; the rows of each of its batches, in order."""
    sizes: list[int] = []
    last = {"done": 0}

    def on_progress(system: str, done: int, total: int) -> None:
        if done > last["done"]:
            sizes.append(done - last["done"])
        last["done"] = done

    # One worker: its batches, one after another, are what the sizing is about.
    report = run_backfill(
        db.engine, db.settings, systems=CASHOUT, progress=on_progress, workers=1, **options
    )
    return sizes, report


def test_batch_sizes_grow_toward_the_target_duration_and_settle(db: Any) -> None:
    seed_legacy(db.engine, db.settings, 9_000, seed=3)  # 3,000 cashouts
    # 0.05 ms a row and 20 ms a batch: the size that takes the target is 400 rows.
    sizes, report = batch_sizes(
        db,
        batch_size=50,
        min_batch_rows=10,
        max_batch_rows=100_000,
        target_batch_ms=20,
        clock=work_clock(db, 0.05),
    )
    assert sum(sizes) == 3_000 and report.as_dict()["inserted"] == 3_000
    assert sizes[0] == 50
    growing = sizes[: sizes.index(max(sizes[:-1])) + 1]
    for before, after in zip(growing, growing[1:], strict=False):
        # Never more than 20% at once (plus one 10-row chunk of rounding).
        assert before <= after <= before * MAX_GROWTH + 10, sizes
    settled = sizes[-4:-1]  # the very last batch takes what is left
    assert all(BAND[0] * 400 - 10 <= s <= BAND[1] * 400 + 10 for s in settled), sizes
    # The chunks were planned at the smallest step, 10 rows; batches took many at once.
    with db.engine.connect() as conn:
        chunk_rows = conn.execute(sa.select(sa.func.max(CH.c.rows))).scalar_one()
    assert chunk_rows == 10 and len(sizes) < 300 / 3
    # Each worker said what it did last, for status and /metrics.
    (worker,) = read_workers(db.engine, include_finished=True)
    assert worker["state"] == "finished" and worker["rows"] == 3_000
    assert worker["last_batch_rows"] == sizes[-1]


def test_batch_sizes_stay_within_the_bounds(db: Any) -> None:
    seed_legacy(db.engine, db.settings, 6_000, seed=4)  # 2,000 cashouts
    sizes, _ = batch_sizes(
        db,
        batch_size=100,
        min_batch_rows=20,
        max_batch_rows=160,
        target_batch_ms=1_000,  # far above what any size here takes: it wants to grow
        clock=work_clock(db, 0.01),
    )
    assert sum(sizes) == 2_000
    assert max(sizes) == 160 and all(s <= 160 for s in sizes)
    # And too slow for the target: down to the minimum, never below.
    with db.engine.begin() as conn:
        for table in (U, CH, J):
            conn.execute(sa.delete(table))
    sizes, _ = batch_sizes(
        db,
        batch_size=100,
        min_batch_rows=20,
        max_batch_rows=160,
        target_batch_ms=1,
        clock=work_clock(db, 1.0),  # 100 ms for 100 rows against a 1 ms target
    )
    assert sum(sizes) == 2_000
    assert sizes[0] == 100 and set(sizes[1:-1]) == {20}


def test_target_zero_keeps_every_batch_at_the_batch_size(db: Any) -> None:
    seed_legacy(db.engine, db.settings, 1_500, seed=5)
    sizes, report = batch_sizes(db, batch_size=100, target_batch_ms=0, clock=work_clock(db, 0.0001))
    assert sizes == [100] * 5 and report.as_dict()["tuning"]["target_batch_ms"] == 0


def test_the_next_table_starts_at_the_size_the_last_one_reached(db: Any) -> None:
    seed_legacy(db.engine, db.settings, 6_000, seed=7)  # 2,000 rows per table
    sizes: dict[str, list[int]] = {}
    last: dict[str, int] = {}

    def on_progress(system: str, done: int, total: int) -> None:
        if done > last.get(system, 0):
            sizes.setdefault(system, []).append(done - last.get(system, 0))
        last[system] = done

    run_backfill(
        db.engine,
        db.settings,
        systems=[LegacySystemType.CASHOUT, LegacySystemType.ESCROW],
        batch_size=10,
        min_batch_rows=10,
        target_batch_ms=20,
        clock=work_clock(db, 0.05),  # the size that takes the target: 400 rows
        progress=on_progress,
        workers=1,
    )
    first, second = (sizes[s] for s in ("CASHOUT", "ESCROW"))
    assert first[0] == 10 and max(first) >= 300  # the first table climbs from 10 rows
    # The second one starts where the first got to, not at 10 rows again.
    assert second[0] >= 300 and len(second) < len(first) / 2, (first, second)


def test_adaptive_batches_interrupted_and_resumed_copy_every_row_once(db: Any) -> None:
    """Multi-chunk batches, stopped after three, resumed with other sizes: each row
    once, every count once (a batch's counts sit on its first chunk)."""
    n, bad = 6_000, 9
    seed_legacy(db.engine, db.settings, n, seed=6, unmappable=bad)
    calls = {"n": 0}

    class Stop(Exception):
        pass

    def stop_after_three(system: str, done: int, total: int) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise Stop

    with pytest.raises(Stop):
        run_backfill(
            db.engine,
            db.settings,
            batch_size=200,
            min_batch_rows=25,
            target_batch_ms=50,
            progress=stop_after_three,
            clock=work_clock(db, 0.01),
            workers=1,
        )
    first = progress(db.engine, db.settings)
    assert 0 < first["CASHOUT"]["done"] < first["CASHOUT"]["total"]
    # The resume: other sizes, other target, the same chunks.
    report = run_backfill(
        db.engine, db.settings, batch_size=75, target_batch_ms=5, clock=work_clock(db, 0.01)
    ).as_dict()
    assert report["complete"] and report["inserted"] == n and report["quarantined"] == bad
    assert report["systems"]["CASHOUT"]["resumed"] is True
    with db.engine.connect() as conn:
        rows, distinct = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(
                    sa.distinct(U.c.legacy_system + ":" + sa.cast(U.c.legacy_id, sa.String))
                ),
            )
        ).one()
        chunked, pending = conn.execute(
            sa.select(
                sa.func.sum(CH.c.rows),
                sa.func.sum(sa.case((CH.c.state == "pending", 1), else_=0)),
            )
        ).one()
    assert rows == distinct == n
    assert chunked == n + bad and pending == 0
    after = progress(db.engine, db.settings)
    for p in after.values():
        assert p["done"] == p["total"] and p["complete"]
    assert sum(p["inserted"] for p in after.values()) == n
    assert sum(p["quarantined"] for p in after.values()) == bad
    kinds = {i.kind for i in inconsistencies(db.engine, db.settings)}
    assert kinds <= {"unmappable_legacy", "missing_unified"}


def test_bad_sizing_options_are_refused(db: Any) -> None:
    seed_legacy(db.engine, db.settings, 30, seed=2)
    for kwargs in (
        {"target_batch_ms": -1},
        {"min_batch_rows": 0},
        {"max_batch_rows": 2.5},
        {"min_batch_rows": 500, "max_batch_rows": 100},
    ):
        with pytest.raises(InputError):
            run_backfill(db.engine, db.settings, **kwargs)
    assert db.count("unified_transactions") == 0 and db.count("unistatus_backfill_jobs") == 0
