"""The first worker's rate cap beside live traffic: the policy with readings made up on
the spot, the live-sessions probe against PostgreSQL, and a worker that copies gently
while another application's session is at work and at full speed without one."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from support.check_data import populate
from support.roles import ALL_ON_PUBLIC, a_role_without_read_all_stats
from support.sessions import until_no_other_at_work
from support.stats_data import record_latency
from unistatus.backfill import read_workers, run_backfill
from unistatus.backfill.health import RAMP, RATE
from unistatus.backfill.pacing import Clock
from unistatus.backfill.ramp import (
    GROWTH,
    MIN_RATE,
    NO_WRITES_SECONDS,
    START_SHARE,
    Ramp,
    grow_below,
)
from unistatus.clock import utcnow
from unistatus.config import BackfillSettings
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.domain.statuses import DualWriteMode
from unistatus.sim.seed import seed_legacy

T0 = utcnow()


def look(ramp: Ramp, seconds: float, **readings: Any) -> float | None:
    values: dict[str, Any] = {
        "live_sessions": 3,
        "quiet_rate": 50_000.0,
        "limit_ms": 36.0,
        "p95_since_change": None,
        "baseline_ms": 30.0,
    }
    values.update(readings)
    ramp.update(now=T0 + timedelta(seconds=seconds), **values)
    return ramp.binding(values["quiet_rate"])


def test_beside_traffic_it_starts_gently_and_grows_while_live_writes_stay_healthy() -> None:
    """Baseline 30 ms, limit 36: the cap grows while the p95 is at most 33 (halfway),
    stays between 33 and 36, and is halved above 36."""
    ramp = Ramp()
    assert look(ramp, 0) == 50_000 * START_SHARE
    assert ramp.changed_at == T0
    assert look(ramp, 1) == 5_000  # no judgement yet: too few operations since the change
    assert look(ramp, 6, p95_since_change=33.0) == 5_000 * GROWTH
    assert ramp.changed_at == T0 + timedelta(seconds=6)
    assert look(ramp, 9, p95_since_change=35.0) == 5_000 * GROWTH  # near the limit: kept
    assert ramp.changed_at == T0 + timedelta(seconds=9)  # and judged on what follows
    assert look(ramp, 12, p95_since_change=37.0) == 5_000 * GROWTH / 2  # above the limit
    for second in range(18, 200, 6):
        cap = look(ramp, second, p95_since_change=20.0)
    assert cap is None and ramp.cap == 50_000  # grown to its quiet speed: binds no more
    assert look(ramp, 206, p95_since_change=99.0) == 25_000  # and cut again when it harms


def test_it_grows_below_halfway_to_the_limit() -> None:
    assert grow_below(36.0, 30.0) == 33.0
    assert grow_below(100.0, None) == 90.0  # an absolute limit only
    assert grow_below(36.0, 40.0) == 36.0 * 0.9  # a baseline above the limit: as unknown


def test_no_cap_without_traffic_a_limit_or_a_measured_speed() -> None:
    ramp = Ramp()
    look(ramp, 0, p95_since_change=20.0)
    assert look(ramp, 6, p95_since_change=20.0) == 7_500
    assert look(ramp, 7, live_sessions=0) == 7_500  # a gap between statements: kept
    assert look(ramp, 8) == 7_500 and ramp.quiet_since is None
    look(ramp, 9, live_sessions=0)
    assert look(ramp, 11, live_sessions=0) is None and ramp.cap is None  # quiet for 2 s
    assert look(ramp, 12) == 5_000  # traffic again: from the start again
    assert look(ramp, 13, live_sessions=None) is None  # a backend that cannot tell
    assert look(ramp, 14, limit_ms=None) is None  # nothing to judge the p95 by
    assert look(ramp, 15, quiet_rate=None) is None  # no batch measured yet
    assert look(ramp, 16, quiet_rate=500.0) == MIN_RATE  # never below a crawl


def test_sessions_at_work_without_live_writes_do_not_keep_it_crawling() -> None:
    """A report, a dump or an operator's open transaction: sessions at work, but no
    adapter operation to judge the cap by. After NO_WRITES_SECONDS it grows."""
    ramp = Ramp()
    assert look(ramp, 0, live_writes=False) == 5_000
    assert look(ramp, NO_WRITES_SECONDS - 1, live_writes=False) == 5_000
    assert look(ramp, NO_WRITES_SECONDS, live_writes=False) == 5_000 * GROWTH
    # Live writes in the window but none flushed since the change yet: it waits.
    assert look(ramp, 3 * NO_WRITES_SECONDS, live_writes=True) == 5_000 * GROWTH


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_live_sessions_counts_other_applications_at_work_not_its_own_kind(pg: Any) -> None:
    ops = ops_for(pg.engine)
    probe = create_engine(pg.url, application_name="unistatus/backfill")
    tool = create_engine(pg.url, application_name="unistatus/check")
    shop = create_engine(pg.url, application_name="shop")

    def live() -> int | None:
        with probe.connect() as conn:  # a transaction of its own: a fresh snapshot
            return ops.live_sessions(conn)

    pg.engine.dispose()  # the fixture's own sessions closed: nobody else at work
    try:
        with probe.connect() as watcher:
            until_no_other_at_work(ops, watcher)
        with probe.connect() as sibling:
            sibling.begin()
            sibling.exec_driver_sql("SELECT 1")
            assert live() == 0  # itself and its own kind left out
            with tool.connect() as busy_tool:
                busy_tool.begin()
                busy_tool.exec_driver_sql("SELECT 1")
                assert live() == 0  # unistatus's tools left out
                with shop.connect() as app:
                    app.begin()
                    app.exec_driver_sql("SELECT 1")  # idle in a transaction: at work
                    assert live() == 1
                    app.rollback()
                # Idle since less than a second: still counted (between statements).
                assert live() == 1
                time.sleep(1.1)
                assert live() == 0  # idle for longer: not at work
    finally:
        for engine in (probe, tool, shop):
            engine.dispose()
    with pg.engine.connect() as conn:
        assert ops_for(pg.engine).live_sessions(conn) is not None


def test_sqlite_cannot_tell_live_sessions(sqlite_db: Any) -> None:
    with sqlite_db.engine.connect() as conn:
        assert ops_for(sqlite_db.engine).live_sessions(conn) is None


def judged_by_p95(pg: Any, *, probe_every: float) -> Any:
    """The test database's settings with a p95 limit to judge by (100 ms), lock waits
    not judged, and a probe every ``probe_every`` seconds."""
    backfill = BackfillSettings(
        max_p95_ms=100.0, max_lock_waits=None, health_interval_seconds=probe_every
    )
    return pg.settings.model_copy(update={"backfill": backfill})


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_the_worker_copies_gently_beside_another_applications_session(pg: Any) -> None:
    """Another application's session in a transaction: the first worker paces itself
    under the ramp's cap (counted as traffic_ramp), and copies everything; without one
    it is not paced at all."""
    seed_legacy(pg.engine, pg.settings, 3_000, seed=11)
    record_latency(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, 2.0, 200)
    settings = judged_by_p95(pg, probe_every=0.001)
    slept: list[float] = []
    shop = create_engine(pg.url, application_name="shop")
    try:
        with shop.connect() as app:
            app.begin()
            app.exec_driver_sql("SELECT 1")
            report = run_backfill(
                pg.engine,
                settings,
                batch_size=300,
                workers=1,
                clock=Clock(sleep=slept.append),
            )
            app.rollback()
    finally:
        shop.dispose()
    assert report.complete and report.inserted == 3_000
    (worker,) = read_workers(pg.engine, include_finished=True)
    assert worker["throttled_seconds"][RAMP] > 0 and sum(slept) > 0
    assert not worker["throttled_seconds"].get(RATE)
    assert worker["readings"]["live_sessions"] == 1
    assert worker["readings"]["ramp_rows_per_second"] > 0


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_without_other_sessions_the_worker_is_not_paced(pg: Any) -> None:
    seed_legacy(pg.engine, pg.settings, 3_000, seed=12)
    settings = judged_by_p95(pg, probe_every=0.001)
    slept: list[float] = []
    report = run_backfill(
        pg.engine, settings, batch_size=300, workers=1, clock=Clock(sleep=slept.append)
    )
    assert report.complete and report.inserted == 3_000
    (worker,) = read_workers(pg.engine, include_finished=True)
    assert not worker["throttled_seconds"].get(RAMP) and slept == []
    assert worker["readings"]["live_sessions"] == 0


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_traffic_that_appears_between_probes_is_paced_from_the_next_batch(pg: Any) -> None:
    """Probes come every ``health_interval_seconds`` (60 s here: one, at the start, in a
    quiet database). Another application's session that begins after the first batch
    is seen before the next one (a cheap reading of the live sessions each batch while
    the last probe saw none), probed at once, and paced: before, the worker copied at
    full speed until the next probe (a second by default, the whole run here)."""
    seed_legacy(pg.engine, pg.settings, 3_000, seed=13)
    record_latency(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, 2.0, 200)
    settings = judged_by_p95(pg, probe_every=60.0)
    shop = create_engine(pg.url, application_name="shop")
    opened: list[sa.Connection] = []

    def after_a_batch(_system: str, done: int, _total: int) -> None:
        if done and not opened:  # traffic begins after the first batch
            app = shop.connect()
            app.begin()
            app.exec_driver_sql("SELECT 1")
            opened.append(app)

    try:
        report = run_backfill(
            pg.engine,
            settings,
            batch_size=300,
            min_batch_rows=300,
            max_batch_rows=300,  # ten batches
            workers=1,
            progress=after_a_batch,
            clock=Clock(sleep=lambda _seconds: None),
        )
    finally:
        for app in opened:
            app.rollback()
            app.close()
        shop.dispose()
    assert report.complete and report.inserted == 3_000 and opened
    (worker,) = read_workers(pg.engine, include_finished=True)
    assert worker["throttled_seconds"].get(RAMP, 0) > 0
    assert worker["readings"]["live_sessions"] == 1
    # The cap that probe set is shown with its readings (it was shown a probe late:
    # None here, where no probe came after it).
    assert worker["readings"]["ramp_rows_per_second"] is not None


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_live_sessions_sees_another_roles_session_at_work_without_read_all_stats(pg: Any) -> None:
    """unistatus runs as a role of its own beside the application's. Without
    ``pg_read_all_stats`` that role reads other roles' sessions in ``pg_stat_activity``
    with their state and type hidden (NULL): the application's traffic counted as none,
    so the backfill copied at full speed beside it and verification never waited. A
    session of another role in a transaction (its virtual transaction's lock, which
    ``pg_locks`` shows to every role) is at work; idle, it is not."""
    ops = ops_for(pg.engine)
    shop = create_engine(pg.url, application_name="shop")  # the application's role
    pg.engine.dispose()
    with a_role_without_read_all_stats(pg) as url:
        probe = create_engine(url, application_name="unistatus/backfill")

        def live() -> int | None:
            with probe.connect() as conn:
                return ops.live_sessions(conn)

        def none_at_work() -> bool:
            # (An autovacuum worker between two tables is a hidden session in a
            # transaction too: a look may catch one, the next will not.)
            for _ in range(15):
                if live() == 0:
                    return True
                time.sleep(0.2)
            return False

        try:
            with shop.connect() as app:
                app.exec_driver_sql("SELECT 1")
                app.commit()
                time.sleep(1.1)
                assert none_at_work()  # idle: not at work
                with probe.connect() as conn:  # hidden from this role indeed
                    state = conn.exec_driver_sql(
                        "SELECT state FROM pg_stat_activity WHERE application_name = 'shop'"
                    ).scalar_one()
                    assert state is None
                app.begin()
                app.exec_driver_sql("SELECT 1")  # idle in a transaction: at work
                assert (live() or 0) >= 1  # (before: 0, hidden)
                app.rollback()
                assert none_at_work()
        finally:
            for engine in (probe, shop):
                engine.dispose()


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_a_backfill_run_by_a_role_that_sees_activity_in_part_says_so(
    pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator whose backfill role lacks pg_read_all_stats is told at the start,
    with the grant that gives the full view; a role that has it is not."""
    populate(pg.engine, pg.settings, 5)
    with a_role_without_read_all_stats(pg, ALL_ON_PUBLIC) as url:
        engine = create_engine(url, application_name="unistatus/backfill")
        try:
            with engine.connect() as conn:
                assert ops_for(engine).reads_all_activity(conn) is False
            with caplog.at_level(logging.WARNING, logger="unistatus.backfill"):
                report = run_backfill(engine, pg.settings, workers=1)
        finally:
            engine.dispose()
    assert report.inserted == 0  # populate wrote the unified rows: nothing to copy
    said = [r.getMessage() for r in caplog.records if "pg_read_all_stats" in r.getMessage()]
    assert len(said) == 1 and "GRANT pg_read_all_stats TO unistatus_test_watcher_" in said[0]
    caplog.clear()
    with pg.engine.connect() as conn:
        assert ops_for(pg.engine).reads_all_activity(conn) is True  # a superuser
    with caplog.at_level(logging.WARNING, logger="unistatus.backfill"):
        run_backfill(pg.engine, pg.settings, workers=1)
    assert not [r for r in caplog.records if "pg_read_all_stats" in r.getMessage()]
