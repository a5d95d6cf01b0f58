"""The alerts when a table they read or write cannot be had (a lock timeout behind a
session holding it, a transient error): unknown, never acted on, and the monitor goes on.

The consistency the alerts judge leaves the rows awaiting the backfill out by the
backfill's progress (:mod:`unistatus.observe.judged`). Unreadable, the rate was judged
with them counted: a phase-1 migration whose check found its legacy rows not yet copied
(as phase 1 expects) read 0%, fired the critical alert and rolled itself back (found by
`monitor --once` behind a locked control table: "consistency_critical firing,
consistency 0.000% -> emergency_rollback: running", then a repair of every row).
Unknown, it is unknown.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from conftest import Database
from support.stats_data import seed_pairs
from unistatus.db.control import get_mode, set_mode
from unistatus.db.engine import create_engine
from unistatus.db.tables import unified_transactions
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.migration.check import run_check
from unistatus.observe import alerts
from unistatus.observe.metrics import SnapshotCollector, collect_snapshot
from unistatus.observe.notify import Notifier


def test_unreadable_backfill_progress_leaves_consistency_unknown_and_rolls_nothing_back(
    db: Database,
) -> None:
    seed_pairs(db.engine, 100)
    with db.engine.begin() as conn:  # phase 1: legacy rows not copied yet, by design
        conn.execute(unified_transactions.delete())
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    report = run_check(db.engine, db.settings)
    assert report.consistency_rate == 0.0  # every row awaits the backfill
    monitor = alerts.Monitor(db.engine, db.settings, notifier=Notifier(), verify_rows=0)
    states = {s.name: s for s in monitor.evaluate()}
    assert states["consistency_critical"].state == "resolved", states["consistency_critical"]
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE unistatus_backfill_jobs RENAME TO jobs_away")
    try:
        states = {s.name: s for s in monitor.evaluate()}
        snap = collect_snapshot(db.engine, db.settings)
        # /metrics answers (a judged rate of None failed the whole scrape: TypeError)
        registry = CollectorRegistry()
        registry.register(SnapshotCollector(db.engine, db.settings))
        scraped = generate_latest(registry).decode()
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE jobs_away RENAME TO unistatus_backfill_jobs")
    for name in ("consistency_critical", "consistency_warning"):
        assert states[name].state == "unknown", states[name]
        assert "backfill progress" in states[name].message, states[name]
    cashouts = (snap.systems or {})["CASHOUT"]  # each system's figures: not judged either
    assert cashouts["alert_consistency_rate"] is None, cashouts
    assert cashouts["alert_inconsistent_rows"] is None, cashouts
    assert cashouts["consistency_rate"] == 0.0, cashouts  # the report's own: shown as it is
    # Not judged: no sample, not a made-up one; the report's own rate is there.
    assert 'unistatus_consistency_alert_rate{system="CASHOUT"}' not in scraped, scraped
    assert 'unistatus_consistency_rate{system="CASHOUT"} 0.0' in scraped, scraped
    assert get_mode(db.engine, LegacySystemType.CASHOUT) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
    assert db.count("unified_transactions") == 0  # no repair either


@pytest.mark.postgres
def test_an_evaluation_behind_a_locked_alert_state_goes_on_unstored(pg: Database) -> None:
    """`monitor` behind a session holding its alert state's table (a migration's DDL, a
    LOCK TABLE) stopped: "cannot store alert state (... lock timeout ...); run `unistatus
    init` to upgrade the schema", exit 2 (found by review): a looping monitor died of a
    short lock, sent to the wrong command. The evaluation is shown, not stored (nothing
    notified or acted on), and the next one, the lock gone, stores it."""
    bounded = create_engine(pg.url, lock_timeout_ms=300)
    dba = create_engine(pg.url, application_name="dba-session")
    notifier = Notifier()
    monitor = alerts.Monitor(bounded, pg.settings, notifier=notifier, verify_rows=0)
    try:
        monitor.evaluate()  # the rows of every rule there
        with dba.connect() as held:
            held.exec_driver_sql("LOCK TABLE unistatus_alert_state IN ACCESS EXCLUSIVE MODE")
            states = {s.name: s for s in monitor.evaluate()}
            held.rollback()
        assert "consistency_critical" in states, states
        assert all("not stored" in s.message for s in states.values()), states
        stored = {s.name: s for s in monitor.evaluate()}
    finally:
        dba.dispose()
        bounded.dispose()
    assert not any("not stored" in s.message for s in stored.values()), stored


@pytest.mark.postgres
def test_a_connection_dropped_while_storing_is_unstored_not_fatal(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dropped the monitor's connection (a failover, a pooler restart, an idle
    kill) between its snapshot and storing the alerts: `monitor` exited 2 saying "run
    `unistatus init` to upgrade the schema" (a probe, 5 runs of 6), and nothing was
    judged or acted on until someone restarted it. Now the evaluation is unstored (the
    next one stores), and the monitor goes on."""
    import sqlalchemy as sa  # noqa: PLC0415

    seed_pairs(pg.engine, 20)
    name = "unistatus_test_dropped"
    engine = create_engine(pg.url, connect_args={"application_name": name})
    try:
        monitor = alerts.Monitor(engine, pg.settings, notifier=Notifier(), verify_rows=0)
        monitor.evaluate()  # its pool holds connections now
        real = alerts.Monitor._store
        dropped: list[int] = []

        def store_after_a_drop(self: alerts.Monitor, *args: object, **kwargs: object) -> object:
            if not dropped:
                with pg.engine.connect() as admin:
                    killed = admin.execute(
                        sa.text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = :name"
                        ),
                        {"name": name},
                    ).scalar_one()
                dropped.append(int(killed))
            return real(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(alerts.Monitor, "_store", store_after_a_drop)
        states = {s.name: s for s in monitor.evaluate()}
        assert dropped and dropped[0] >= 1
        assert monitor.unstored is not None, states
        assert not any(s.firing for s in states.values()), states
        again = {s.name: s for s in monitor.evaluate()}  # the next one stores
        assert monitor.unstored is None
        assert again["database_down"].state == "resolved", again["database_down"]
    finally:
        engine.dispose()


def test_monitor_goes_on_after_an_evaluation_lost_its_connection(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection lost anywhere in an evaluation (not only while storing) ended
    `monitor` with "database error: ... server closed the connection unexpectedly" (a
    probe): the running monitor warns and evaluates again; `--once` still fails."""
    import sqlalchemy as sa  # noqa: PLC0415
    from typer.testing import CliRunner  # noqa: PLC0415

    from unistatus.cli import app  # noqa: PLC0415

    real = alerts.Monitor.evaluate
    calls: list[int] = []

    def first_one_lost(self: alerts.Monitor, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            lost = RuntimeError("server closed the connection unexpectedly")
            raise sa.exc.OperationalError("SELECT 1", {}, lost, connection_invalidated=True)
        return real(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(alerts.Monitor, "evaluate", first_one_lost)
    args = ["--database-url", sqlite_db.url, "monitor", "--interval", "0.1", "--verify-rows", "0"]
    result = CliRunner().invoke(app, [*args, "--count", "1"])
    assert result.exit_code == 0, result.output
    assert "connection was lost" in " ".join(result.output.split()) and len(calls) == 2
    calls.clear()
    once = CliRunner().invoke(app, [*args, "--once"])
    assert once.exit_code == 2, once.output


def test_evaluations_do_not_fill_the_statement_cache(db: Database) -> None:
    """Each evaluation reflected the legacy tables into new Table objects, so every
    statement built on them was a new entry of the engine's statement cache: +130 MB a
    process over ~500 evaluations, and in `serve` the adapter's own statements pushed out
    of the cache it shares (a probe). The same tables give the same Table objects."""
    seed_pairs(db.engine, 30)
    run_check(db.engine, db.settings)
    monitor = alerts.Monitor(db.engine, db.settings, notifier=Notifier())
    cache = db.engine._compiled_cache  # SQLAlchemy's LRU of compiled statements
    assert cache is not None
    for _ in range(3):
        monitor.evaluate()
    settled = len(cache)
    for _ in range(6):
        monitor.evaluate()
    assert len(cache) <= settled + 2, (settled, len(cache))
