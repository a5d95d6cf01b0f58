"""The backfill's health throttle: the decision, each probe against a real database,
and a worker that holds back while a reading is above its limit and goes on after.

A worker's hold is observed through its injected sleep: the worker has stored why it
holds (its row in unistatus_backfill_workers) before it sleeps, so the test reads the
row there, then makes the database healthy again; nothing waits on wall-clock time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import IN_EVERY_LAYOUT, PG_IN_EVERY_LAYOUT
from support.host_clock import host_clock_ahead
from support.stats_data import record_latency
from unistatus.backfill import read_workers, run_backfill
from unistatus.backfill.activity import Activity, live_workers
from unistatus.backfill.health import (
    BASELINE,
    GO,
    LAG,
    LOCKS,
    P95,
    TRAFFIC,
    Decision,
    Limits,
    Readings,
    baseline_p95,
    decide,
    read_health,
)
from unistatus.backfill.pacing import Clock
from unistatus.clock import utcnow
from unistatus.config import BackfillSettings
from unistatus.db.catalog import qualified_name
from unistatus.db.dialect import ops_for
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.tables import unified_transactions
from unistatus.db.tables_backfill import backfill_workers
from unistatus.db.tables_ops import FINE_COLUMNS, operation_stats
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.sim.seed import seed_legacy

MODE = DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY


def with_backfill(db: Any, **values: Any) -> Any:
    """The test database's settings with these ``[backfill]`` values."""
    return db.settings.model_copy(update={"backfill": BackfillSettings(**values)})


def health_now(db: Any, **kwargs: Any) -> Readings:
    tables = [lt.table for lt in resolve_legacy_tables(db.engine, db.settings).values()]
    return read_health(
        db.engine,
        ops_for(db.engine),
        [*tables, unified_transactions],
        window_seconds=kwargs.get("window_seconds", 15.0),
        min_operations=kwargs.get("min_operations", 20),
        now=utcnow(),
    )


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# --- the decision, with readings made up on the spot --------------------------------------


def test_each_probe_holds_back_only_above_its_limit() -> None:
    limits = Limits(max_p95_ms=100.0, max_replication_lag_seconds=10.0, max_lock_waits=2)
    assert decide(Readings(p95_ms=100.0, replication_lag_seconds=10.0, lock_waits=2), limits) == GO
    assert decide(Readings(p95_ms=150.0), limits).reason == P95
    lag = decide(Readings(replication_lag_seconds=30.0), limits)
    assert (lag.reason, lag.reading, lag.limit) == (LAG, 30.0, 10.0)
    assert "replication_lag 30 s > 10 s" == lag.describe()
    assert decide(Readings(lock_waits=3), limits).reason == LOCKS
    # Several at once: the adapter's p95 first (live writes come first), then lag.
    assert decide(Readings(p95_ms=500.0, replication_lag_seconds=60.0), limits).reason == P95
    # Unknown readings (SQLite's lag, too few operations) never hold anything back.
    assert decide(Readings(), limits) == GO
    # No limit: never held back, whatever the reading.
    assert decide(Readings(p95_ms=10_000.0, replication_lag_seconds=3600.0), Limits()) == GO


def test_an_extra_worker_holds_beside_live_traffic_the_first_never() -> None:
    busy = Readings(p95_ms=3.0, operations=500)
    extra = decide(busy, Limits(max_live_operations=19))
    assert (extra.reason, extra.reading, extra.limit) == (TRAFFIC, 500.0, 19.0)
    assert extra.describe() == "live_traffic 500 operations > 19 operations"
    assert decide(busy, Limits()) == GO  # the first worker of a process
    assert decide(Readings(operations=19), Limits(max_live_operations=19)) == GO  # quiet
    # Health first: a p95 above its limit is the reason, whichever worker asks.
    assert (
        decide(Readings(p95_ms=300.0, operations=500), Limits(100.0, max_live_operations=19)).reason
        == P95
    )


def test_the_p95_limit_is_the_stricter_of_absolute_and_relative_to_the_baseline() -> None:
    assert Limits(max_p95_ms=100.0).p95_limit_ms == 100.0
    assert Limits(baseline_p95_ms=80.0, p95_over_baseline=1.2).p95_limit_ms == 96.0
    both = Limits(max_p95_ms=90.0, baseline_p95_ms=80.0, p95_over_baseline=1.2)
    assert both.p95_limit_ms == 90.0
    # A baseline of a few ms: at least 5 ms above it, not 20% of almost nothing.
    assert Limits(baseline_p95_ms=2.0, p95_over_baseline=1.2).p95_limit_ms == 7.0
    assert Limits(baseline_p95_ms=80.0).p95_limit_ms is None  # no ratio: no relative limit


# --- the probes against the database --------------------------------------------------------


def test_the_p95_probe_reads_every_process_s_statistics(db: Any) -> None:
    limits = Limits(max_p95_ms=100.0)
    record_latency(db.engine, MODE, 400.0, 5)
    assert health_now(db).p95_ms is None  # 5 operations: too few to judge
    record_latency(db.engine, MODE, 400.0, 40)
    slow = health_now(db)
    assert slow.operations == 45 and slow.p95_ms is not None and slow.p95_ms > 300
    assert decide(slow, limits).reason == P95
    record_latency(db.engine, MODE, 2.0, 2_000)  # live writes fast again
    fast = health_now(db)
    assert fast.p95_ms is not None and fast.p95_ms < 5 and decide(fast, limits) == GO


@IN_EVERY_LAYOUT
def test_the_replication_lag_probe_is_a_real_query_and_none_without_replicas(db: Any) -> None:
    """No replica here (SQLite has none at all): the lag is unknown, nothing held back
    even under a tiny limit; the decision itself is tested with a made-up reading."""
    with db.engine.connect() as conn:
        assert ops_for(db.engine).replication_lag_seconds(conn) is None
    readings = health_now(db)
    assert readings.replication_lag_seconds is None
    assert decide(readings, Limits(max_replication_lag_seconds=0.001)) == GO


def test_sqlite_cannot_tell_lock_waits(sqlite_db: Any) -> None:
    assert health_now(sqlite_db).lock_waits is None


@contextmanager
def blocked_session(db: Any, hold_sql: str, blocked_sql: str) -> Iterator[Callable[[], None]]:
    """One session holds a lock (``hold_sql``), another waits for it (``blocked_sql``);
    yields the release (rolls the holder back). Synchronised on pg_locks, no sleeps."""
    holder = db.engine.connect()
    holder.begin()
    holder.exec_driver_sql(hold_sql)
    done = threading.Event()

    def blocked() -> None:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(blocked_sql)
        done.set()

    thread = threading.Thread(target=blocked, daemon=True)
    thread.start()
    wait_for(lambda: (health_now(db).lock_waits or 0) >= 1, "the session to wait")

    def release() -> None:
        if holder.in_transaction():
            holder.rollback()
            done.wait(20)

    try:
        yield release
    finally:
        release()
        holder.close()
        thread.join(20)


@PG_IN_EVERY_LAYOUT
def test_lock_waits_count_a_session_blocked_by_another(pg: Any) -> None:
    seed_legacy(pg.engine, pg.settings, 30, seed=1)
    unified = qualified_name("unified_transactions", pg.engine)
    assert health_now(pg).lock_waits == 0
    limits = Limits(max_lock_waits=0)
    # A legacy row locked by one writer, another writer waiting for it.
    row = "UPDATE cashouts SET amount = amount WHERE id = (SELECT min(id) FROM cashouts)"
    with blocked_session(pg, row, row) as release:
        held = decide(health_now(pg), limits)
        assert (held.reason, held.reading, held.limit) == (LOCKS, 1.0, 0.0)
        release()
        wait_for(lambda: health_now(pg).lock_waits == 0, "the wait to end")
    assert decide(health_now(pg), limits) == GO
    # unified_transactions (in unistatus's schema in that layout) locked as a table.
    with blocked_session(
        pg, f"LOCK TABLE {unified} IN EXCLUSIVE MODE", f"DELETE FROM {unified}"
    ) as release:
        assert health_now(pg).lock_waits == 1
        release()
    # A legacy table locked as a whole: its waiters count (the relation lock itself).
    with blocked_session(pg, "LOCK TABLE cashouts IN EXCLUSIVE MODE", "DELETE FROM cashouts"):
        assert health_now(pg).lock_waits == 1
    # A lock wait on a table that is not the migration's is not the backfill's business.
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS unrelated_t (id int)")
    holder = pg.engine.connect()
    holder.begin()
    holder.exec_driver_sql("LOCK TABLE unrelated_t IN ACCESS EXCLUSIVE MODE")

    def wait_on_it() -> None:
        with pg.engine.connect() as conn:
            conn.exec_driver_sql("SELECT * FROM unrelated_t").all()

    waiter = threading.Thread(target=wait_on_it, daemon=True)
    waiter.start()
    with pg.engine.connect() as conn:
        wait_for(
            lambda: (
                conn.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE NOT granted").scalar_one()
                >= 1
            ),
            "the unrelated wait",
        )
    assert health_now(pg).lock_waits == 0
    holder.rollback()
    holder.close()
    waiter.join(20)
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE unrelated_t")


# --- a worker holding back and going on ---------------------------------------------------


def test_the_worker_holds_while_the_p95_is_above_the_limit_and_resumes(db: Any) -> None:
    seed_legacy(db.engine, db.settings, 600, seed=7)
    record_latency(db.engine, MODE, 400.0, 40)  # live writes suffer
    settings = with_backfill(db, max_p95_ms=100.0, p95_over_baseline=None, max_lock_waits=None)
    seen: list[tuple[dict[str, Any], int]] = []

    def sleep(seconds: float) -> None:
        if not seen:
            (worker,) = read_workers(db.engine)
            seen.append((worker, db.count("unified_transactions")))
            record_latency(db.engine, MODE, 2.0, 2_000)  # and recover

    report = run_backfill(db.engine, settings, batch_size=100, workers=1, clock=Clock(sleep=sleep))
    assert report.complete and report.inserted == 600
    worker, copied = seen[0]
    assert copied == 0  # held before its first batch
    throttle = worker["throttle"]
    assert worker["state"] == "throttled" and throttle["reason"] == P95
    assert throttle["reading"] > 300 and throttle["limit"] == 100.0
    assert throttle["since"] is not None and worker["readings"]["p95_ms"] > 300
    (finished,) = read_workers(db.engine, include_finished=True)
    assert finished["state"] == "finished" and finished["throttle"]["reason"] is None
    assert finished["throttled_seconds"][P95] > 0


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_the_worker_holds_while_sessions_wait_for_locks(pg: Any) -> None:
    seed_legacy(pg.engine, pg.settings, 300, seed=8)
    settings = with_backfill(pg, max_lock_waits=0)
    row = "UPDATE escrows SET amount = amount WHERE id = (SELECT min(id) FROM escrows)"
    seen: list[dict[str, Any]] = []
    with blocked_session(pg, row, row) as release:

        def sleep(seconds: float) -> None:
            if not seen:
                seen.extend(read_workers(pg.engine))
                release()
                wait_for(lambda: health_now(pg).lock_waits == 0, "the wait to end")

        report = run_backfill(
            pg.engine, settings, batch_size=100, workers=1, clock=Clock(sleep=sleep)
        )
    assert report.complete and report.inserted == 300
    (worker,) = seen
    assert worker["throttle"]["reason"] == LOCKS
    assert worker["throttle"]["reading"] == 1.0 and worker["throttle"]["limit"] == 0.0
    assert worker["readings"]["lock_waits"] == 1
    assert LegacySystemType.ESCROW.value in report.as_dict()["systems"]


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_the_extra_worker_waits_while_the_adapter_serves_traffic(pg: Any) -> None:
    """Two workers: beside live traffic the second one waits and the first copies
    everything; once nothing is left to claim, the waiting one ends too."""
    seed_legacy(pg.engine, pg.settings, 3_000, seed=9)
    record_latency(pg.engine, MODE, 2.0, 2_000)  # the adapter served 2,000 operations just now
    started = time.monotonic()
    report = run_backfill(pg.engine, pg.settings, batch_size=100, workers=2)
    # The waiting worker ended when nothing was pending, not when the traffic left the
    # 15 s p95 window.
    assert time.monotonic() - started < 10
    assert report.complete and report.inserted == 3_000
    first, extra = sorted(read_workers(pg.engine, include_finished=True), key=lambda w: w["worker"])
    assert first["rows"] == 3_000 and extra["rows"] == 0
    assert extra["throttled_seconds"][TRAFFIC] > 0 and not first["throttled_seconds"].get(TRAFFIC)


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_without_live_traffic_both_workers_copy(pg: Any) -> None:
    seed_legacy(pg.engine, pg.settings, 30_000, seed=9)
    report = run_backfill(pg.engine, pg.settings, batch_size=100, workers=2)
    assert report.complete and report.inserted == 30_000
    rows = [w["rows"] for w in read_workers(pg.engine, include_finished=True)]
    assert len(rows) == 2 and all(n > 0 for n in rows) and sum(rows) == 30_000


@IN_EVERY_LAYOUT
def test_a_worker_waiting_beside_live_traffic_takes_no_share_of_the_rate(db: Any) -> None:
    """The rate is divided among the workers that copy: one waiting beside live traffic
    leaves its share to the others (and is counted again once it copies)."""
    ops = ops_for(db.engine)
    first, extra = Activity(ops, "host:1.0", 100), Activity(ops, "host:1.1", 100)
    extra.hold(Decision(TRAFFIC, 500.0, 19.0), utcnow())
    for activity in (first, extra):
        activity.write(0.0, force=True)
    with db.engine.connect() as conn:
        assert live_workers(conn) == 1
    extra.hold(GO, utcnow())
    extra.write(1.0, force=True)
    with db.engine.connect() as conn:
        assert live_workers(conn) == 2


def test_workers_on_hosts_off_the_database_s_clock_count_each_other_alive(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's heartbeat was its host's time, read by the others on theirs (alive:
    heard from within 15 s): a worker a minute behind was gone to the others, one a
    minute ahead saw only itself, each took a whole share of the rate (a probe)."""
    ops = ops_for(db.engine)
    for name, off in (("host-a:1", 0), ("host-b:1", -60), ("host-c:1", 60)):
        with monkeypatch.context() as m:
            host_clock_ahead(m, timedelta(seconds=off))
            Activity(ops, name, 100).write(0.0, force=True)
    for off in (0, -60, 60):
        with monkeypatch.context() as m:
            host_clock_ahead(m, timedelta(seconds=off))
            with db.engine.connect() as conn:
                assert live_workers(conn) == 3, off
            alive = {w["worker"]: w["alive"] for w in read_workers(db.engine)}
            assert alive == dict.fromkeys(("host-a:1", "host-b:1", "host-c:1"), True), off


def stamp_after(db: Any, seconds: float) -> None:
    """Every stored statistics interval ends ``seconds`` from now: a flush that the
    backfill's job start precedes (traffic that began after the backfill started)."""
    with db.engine.begin() as conn:
        conn.execute(
            sa.update(operation_stats).values(interval_end=utcnow() + timedelta(seconds=seconds))
        )


@IN_EVERY_LAYOUT
def test_traffic_that_begins_after_the_job_started_is_measured_before_it_is_judged(
    db: Any,
) -> None:
    """Started in a quiet hour, the backfill has no p95 of live writes without it.
    When live traffic appears it holds until it has learned that p95 from operations
    made while it held (not from those it may already have slowed), then judges the
    p95 against it: here the slow operations from before the hold keep it back."""
    seed_legacy(db.engine, db.settings, 600, seed=7)
    record_latency(db.engine, MODE, 400.0, 40)  # slowed by the backfill already?
    stamp_after(db, 1.0)
    settings = with_backfill(db, max_lock_waits=None, health_interval_seconds=0.01)
    seen: list[tuple[dict[str, Any], int]] = []

    def sleep(seconds: float) -> None:
        seen.append((read_workers(db.engine)[0], db.count("unified_transactions")))
        if len(seen) == 1:
            record_latency(db.engine, MODE, 2.0, 200)  # live writes while it holds
        elif len(seen) == 2:
            record_latency(db.engine, MODE, 2.0, 20_000)  # the slow ones are outliers now

    report = run_backfill(db.engine, settings, batch_size=100, workers=1, clock=Clock(sleep=sleep))
    assert report.complete and report.inserted == 600
    (learning, copied), (judged, still_copied) = seen[0], seen[1]
    assert copied == 0 and learning["throttle"]["reason"] == BASELINE
    assert learning["throttle"]["reading"] == 40.0  # the live operations it saw
    # Learned from the 200 operations made while it held: a p95 of a few ms, so the
    # limit is 5 ms above it; the 400 ms operations it saw first hold it back.
    assert still_copied == 0 and judged["throttle"]["reason"] == P95
    assert judged["readings"]["baseline_p95_ms"] < 5
    assert judged["throttle"]["limit"] < 10 and judged["throttle"]["reading"] > 300
    (finished,) = read_workers(db.engine, include_finished=True)
    assert finished["throttled_seconds"][BASELINE] > 0 and finished["throttled_seconds"][P95] > 0


def another_host_judging_by(db: Any, baseline_ms: float, worker: str) -> None:
    """A live worker of another host (its heartbeat now) whose p95 baseline is given."""
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(backfill_workers).values(
                worker=worker,
                state="running",
                batch_rows=100,
                rows=0,
                readings={"baseline_p95_ms": baseline_ms},
                started_at=now,
                updated_at=now + timedelta(minutes=5),  # alive for the whole test
            )
        )


@IN_EVERY_LAYOUT
def test_a_worker_joining_beside_live_traffic_takes_the_baseline_another_learned(
    db: Any,
) -> None:
    """A worker started (on another host, say) while the backfill already runs beside
    live traffic has no p95 without the backfill to learn: the operations made while it
    holds are already slowed by the workers copying. It takes the baseline a live worker
    judges by (the lowest, if they differ: 2 ms here) instead of learning the raised one
    (400 ms), so the raised p95 holds it back."""
    seed_legacy(db.engine, db.settings, 600, seed=7)
    another_host_judging_by(db, 50.0, "third-host:7")
    another_host_judging_by(db, 2.0, "other-host:4242")
    record_latency(db.engine, MODE, 400.0, 40)  # raised by the other host's copying
    stamp_after(db, 1.0)
    settings = with_backfill(db, max_lock_waits=None, health_interval_seconds=0.01)
    seen: list[tuple[dict[str, Any], int]] = []

    def sleep(seconds: float) -> None:
        mine = [w for w in read_workers(db.engine) if "-host:" not in w["worker"]]
        seen.append((mine[0], db.count("unified_transactions")))
        if len(seen) == 1:
            record_latency(db.engine, MODE, 400.0, 200)  # still raised while it holds
        elif len(seen) == 2:
            with db.engine.begin() as conn:  # the other host finished; traffic is fast
                conn.execute(sa.delete(backfill_workers).where(W_OTHER))
            record_latency(db.engine, MODE, 1.0, 50_000)

    report = run_backfill(db.engine, settings, batch_size=100, workers=1, clock=Clock(sleep=sleep))
    assert report.complete and report.inserted == 600
    assert len(seen) >= 2, "it learned the raised p95 as its baseline and copied"
    (learning, copied), (judged, still_copied) = seen[0], seen[1]
    assert copied == 0 and learning["throttle"]["reason"] == BASELINE
    assert still_copied == 0 and judged["throttle"]["reason"] == P95
    assert judged["readings"]["baseline_p95_ms"] == 2.0  # the other worker's
    assert judged["throttle"]["limit"] < 10 and judged["throttle"]["reading"] > 300


W_OTHER = backfill_workers.c.worker.in_(["other-host:4242", "third-host:7"])


@IN_EVERY_LAYOUT
def test_a_baseline_from_coarse_buckets_only_is_learned_again(db: Any) -> None:
    """Operations flushed before revision 0019 (or by older code) have only the coarse
    buckets; the live p95 is read from the fine ones: not comparable (a p95 of 25
    against 46 ms for the same operations), so such a baseline is unknown and learned."""
    before = utcnow()
    record_latency(db.engine, MODE, 30.0, 100)
    job_start = utcnow()
    assert baseline_p95(db.engine, job_start, 20) is not None
    with db.engine.begin() as conn:  # as an older writer left them
        conn.execute(sa.update(operation_stats).values({c: 0 for c in FINE_COLUMNS}))
    assert baseline_p95(db.engine, job_start, 20) is None
    assert before < job_start
