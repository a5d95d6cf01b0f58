"""Tuning values: parsed strictly, and which one a worker uses (the newest of the run's
option and a tune made during the job)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from support.backfill_data import interrupted_job
from support.host_clock import host_clock_ahead
from unistatus.backfill import current_tuning, progress, read_workers, run_backfill, tune
from unistatus.backfill.activity import Activity
from unistatus.backfill.control import (
    TUNABLE,
    StoredValue,
    Tuning,
    effective_tuning,
    parse_tuning,
    stored_tuning,
)
from unistatus.backfill.pacing import Clock
from unistatus.clock import utcnow
from unistatus.config import BackfillSettings
from unistatus.db.control import history
from unistatus.db.dialect import ops_for
from unistatus.db.tables_backfill import backfill_jobs
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError
from unistatus.sim.seed import seed_legacy

T0 = utcnow()


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def test_values_parse_to_numbers_or_off_and_bad_ones_are_refused() -> None:
    assert parse_tuning("max_rows_per_second", "2500") == 2500.0
    assert parse_tuning("max_rows_per_second", 0) is None  # 0 rows/s: no limit
    assert parse_tuning("max_p95_ms", "off") is None
    assert parse_tuning("max_lock_waits", "0") == 0  # any waiter holds the backfill back
    assert parse_tuning("target_batch_ms", 0) == 0.0  # fixed batches
    assert parse_tuning("max_batch_rows", "5000") == 5000
    for name, value in (
        ("max_rows_per_second", "fast"),
        ("max_rows_per_second", -1),
        ("max_rows_per_second", 1e-9),  # under the backfill's floor (0.001 rows/s)
        ("max_batch_rows", 0),
        ("max_batch_rows", 2.5),
        ("target_batch_ms", "off"),
        ("p95_over_baseline", 0.5),
        ("max_lock_waits", float("nan")),
        ("batch_color", 1),
    ):
        with pytest.raises(InputError):
            parse_tuning(name, value)


def test_the_newest_of_the_run_s_option_and_a_tune_during_the_job_wins() -> None:
    base = Tuning.from_settings(BackfillSettings(), max_rows_per_second=1000)
    given = {"max_rows_per_second"}
    stored = {
        "max_rows_per_second": StoredValue(5000.0, at(20), "alice"),
        "target_batch_ms": StoredValue(50.0, at(20), "alice"),
        "max_lock_waits": StoredValue(None, at(-100), "bob"),  # before the job: not used
    }
    # Run started at 10, job planned at 0: the tune at 20 is newer than both.
    tuning, sources = effective_tuning(base, given, at(10), at(0), stored)
    assert tuning.max_rows_per_second == 5000.0 and tuning.target_batch_ms == 50.0
    assert tuning.max_lock_waits == 2 and sources["max_lock_waits"] == "settings"
    assert sources["max_rows_per_second"].startswith("tune by alice at ")
    # A run started after the tune with its own rate: its option wins; the tune still
    # sets what the run did not give.
    tuning, sources = effective_tuning(base, given, at(30), at(0), stored)
    assert tuning.max_rows_per_second == 1000 and sources["max_rows_per_second"] == "option"
    assert tuning.target_batch_ms == 50.0
    # A job planned after the tune: the tune belonged to an earlier job.
    tuning, _ = effective_tuning(base, given, at(40), at(30), stored)
    assert tuning.target_batch_ms == 200.0


def test_tune_stores_and_logs_each_value(db: Any) -> None:
    seed_legacy(db.engine, db.settings, 300, seed=5)
    interrupted_job(db)  # a tune belongs to a job: here one that no worker runs now
    result = tune(
        db.engine,
        actor="alice",
        reason="peak hours",
        max_rows_per_second=2000,
        max_p95_ms="off",
        target_batch_ms=None,  # not given: unchanged
    )
    assert result["tuned"] == {"max_rows_per_second": 2000.0, "max_p95_ms": None}
    assert result["of"] == "next run"
    with db.engine.connect() as conn:
        stored = stored_tuning(conn)
    assert stored["max_rows_per_second"].value == 2000.0 and stored["max_p95_ms"].value is None
    logged = history(db.engine, key="backfill.max_rows_per_second")
    assert logged[0].new_value == "2000" and logged[0].actor == "alice"
    assert logged[0].reason == "peak hours"
    now = current_tuning(db.engine, db.settings)
    assert now["values"]["max_rows_per_second"] == 2000.0
    assert now["sources"]["max_rows_per_second"].startswith("tune by alice")
    assert now["sources"]["target_batch_ms"] == "settings"
    with pytest.raises(InputError):
        tune(db.engine, actor="alice", reason="nothing")
    with pytest.raises(InputError):
        tune(db.engine, actor="alice", reason="", max_rows_per_second=5)


def test_a_tune_reaches_a_worker_in_a_long_wait_for_its_rate(db: Any) -> None:
    """At 0.05 rows/s a batch of 100 rows owes 2,000 s: the wait is taken in slices,
    the tuning re-read between them, so `tune --max-rows-per-second off` ends it
    within about a second (it used to sleep the 2,000 s in one go), and the worker's
    row shows the wait while it lasts. Time here is the test's: only sleeps pass it."""
    seed_legacy(db.engine, db.settings, 900, seed=5)
    now = {"t": 0.0}
    slept: list[float] = []
    seen: list[dict[str, Any]] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now["t"] += seconds
        if len(slept) == 4:  # about 2 s into the first wait
            seen.extend(read_workers(db.engine))
            tune(db.engine, actor="alice", reason="off-peak", max_rows_per_second="off")

    report = run_backfill(
        db.engine,
        db.settings,
        systems=[LegacySystemType.CASHOUT],
        batch_size=100,
        target_batch_ms=0,
        max_rows_per_second=0.05,
        workers=1,
        clock=Clock(timer=lambda: now["t"], sleep=sleep),
    )
    assert max(slept) <= 1.0, f"slept {max(slept):g} s in one go"
    assert report.complete and sum(slept) < 5.0  # the tune ended the wait
    (waiting,) = seen
    assert waiting["throttled_seconds"]["max_rows_per_second"] > 0


def slow_run(db: Any, on_sleep: Any, **options: Any) -> Any:
    """The cashout backfill at 100 rows/s in batches of 100, on the test's time (only
    sleeps pass it): ``on_sleep(n)`` is called at its n-th sleep, while it runs."""
    now = {"t": 0.0, "n": 0}

    def sleep(seconds: float) -> None:
        now["t"] += seconds
        now["n"] += 1
        on_sleep(now["n"])

    return run_backfill(
        db.engine,
        db.settings,
        systems=[LegacySystemType.CASHOUT],
        batch_size=100,
        target_batch_ms=0,
        workers=1,
        clock=Clock(timer=lambda: now["t"], sleep=sleep),
        **{"max_rows_per_second": 100, **options},
    )


def test_status_shows_the_tuning_the_running_workers_use(db: Any) -> None:
    """A run's own options are its tuning: `backfill status` showed the settings'
    (max_rows_per_second=off during a run at 100 rows/s)."""
    seed_legacy(db.engine, db.settings, 600, seed=5)
    seen: list[dict[str, Any]] = []
    report = slow_run(db, lambda n: seen.append(current_tuning(db.engine, db.settings)))
    assert report.complete and seen
    values, sources = seen[0]["values"], seen[0]["sources"]
    assert values["max_rows_per_second"] == 100.0 and sources["max_rows_per_second"] == "option"
    assert values["target_batch_ms"] == 0.0 and sources["target_batch_ms"] == "option"
    assert values["max_lock_waits"] == 2 and sources["max_lock_waits"] == "settings"


def test_a_tune_is_the_running_job_s_and_none_is_taken_without_one(db: Any) -> None:
    """A tune made during a job is shown (and used) while it runs; once the job is
    done the next one starts from the settings and its options, so `status` shows
    those, and a tune with no job to apply to is refused, nothing stored (it was
    stored and shown as the tuning, and the next run ignored it)."""
    seed_legacy(db.engine, db.settings, 600, seed=5)
    seen: list[dict[str, Any]] = []

    def tune_then_look(n: int) -> None:
        if n == 1:
            tune(db.engine, actor="alice", reason="lock storm", max_lock_waits=0)
        seen.append(current_tuning(db.engine, db.settings))

    assert slow_run(db, tune_then_look).complete
    # Shown once the worker uses it: it re-reads the tuning between two slices of a wait.
    assert seen[1]["values"]["max_lock_waits"] == 0
    assert seen[1]["sources"]["max_lock_waits"].startswith("tune by alice")
    after = current_tuning(db.engine, db.settings)
    assert after["values"]["max_lock_waits"] == 2 and after["sources"]["max_lock_waits"] == (
        "settings"
    )
    with pytest.raises(InputError, match="no backfill"):
        tune(db.engine, actor="bob", reason="too late", max_p95_ms=150)
    assert history(db.engine, key="backfill.max_p95_ms") == []


def test_bounds_are_checked_against_a_tune_the_workers_have_not_applied_yet(db: Any) -> None:
    """While workers run, the tuning in force is what they reported; a tune stored since
    reaches them at their next batch. Checked against their report alone, a second tune
    made before then stored max_batch_rows 10,000 under the first's min 50,000."""
    seed_legacy(db.engine, db.settings, 300, seed=5)
    interrupted_job(db)
    worker = Activity(ops_for(db.engine), "host-a:1", batch_rows=1_000)
    worker.tuned({"tuning": Tuning().as_dict(), "tuning_sources": {n: "settings" for n in TUNABLE}})
    worker.write(0.0)
    assert current_tuning(db.engine, db.settings)["of"] == "running workers"
    tune(db.engine, actor="alice", reason="a", min_batch_rows=50_000)
    with pytest.raises(InputError, match="above max_batch_rows"):
        tune(db.engine, actor="bob", reason="b", max_batch_rows=10_000)
    assert history(db.engine, key="backfill.max_batch_rows") == []
    # Both bounds together are checked against each other only.
    tune(db.engine, actor="bob", reason="b", min_batch_rows=5_000, max_batch_rows=10_000)


def test_a_tune_counts_for_a_job_planned_on_a_host_ahead(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's start was its planning host's time and a tune's the database's: a job
    planned on a host five minutes ahead took every tune of its first five minutes for
    an earlier job's, and `tune` said it was stored (a probe)."""
    if db.backend == "sqlite":
        pytest.skip("SQLite's clock is this host's own: no host can be off it")
    seed_legacy(db.engine, db.settings, 300, seed=5)
    with monkeypatch.context() as m:
        host_clock_ahead(m, timedelta(minutes=5))
        interrupted_job(db)
    tune(db.engine, actor="alice", reason="slow down", max_rows_per_second=10)
    tuning = current_tuning(db.engine, db.settings)
    assert tuning["values"]["max_rows_per_second"] == 10, tuning
    assert tuning["sources"]["max_rows_per_second"].startswith("tune by alice")


def test_the_progress_of_a_worker_on_a_host_behind_reads_running(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker two minutes behind stamped its chunks two minutes ago: `backfill status`
    on another host said 'stalled' (nothing for a minute) while it copied (a probe)."""
    if db.backend == "sqlite":
        pytest.skip("SQLite's clock is this host's own: no host can be off it")
    seed_legacy(db.engine, db.settings, 300, seed=5)
    with monkeypatch.context() as m:
        host_clock_ahead(m, timedelta(minutes=-2))
        interrupted_job(db)
        Activity(ops_for(db.engine), "host-b:1", batch_rows=50).write(0.0, force=True)
    with db.engine.begin() as conn:  # planned long ago: only the chunks say it copies
        ago = sa.text("now() - interval '10 minutes'")
        conn.execute(sa.update(backfill_jobs).values(started_at=ago, updated_at=ago))
    states = {s: p["state"] for s, p in progress(db.engine, db.settings).items() if p["done"]}
    assert states and set(states.values()) == {"running"}, states


def test_a_backfill_run_on_a_host_behind_finishes_after_it_started(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its start on the database's clock, its finish on the worker's two minutes behind:
    finished before it began, at 100,000,000 rows a second (a review)."""
    if db.backend == "sqlite":
        pytest.skip("SQLite's clock is this host's own: no host can be off it")
    seed_legacy(db.engine, db.settings, 300, seed=5)
    with monkeypatch.context() as m:
        host_clock_ahead(m, timedelta(minutes=-2))
        assert run_backfill(db.engine, db.settings, batch_size=50, workers=1).complete
    for system, p in progress(db.engine, db.settings).items():
        if p["done"]:
            assert p["finished_at"] >= p["started_at"], (system, p)
            assert p["average_rows_per_second"] < 1_000_000, (system, p)
