"""unistatus through a connection pooler in transaction mode (PgBouncer), as production
servers are often reached; and its connections' settings when reached directly.

A transaction pooler hands each transaction whichever server connection is free: a
statement psycopg prepared on one is unknown to the next ("prepared statement _pg3_N
does not exist"), and PgBouncer refuses a startup ``options`` parameter outright.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in
from support.cli_run import cli
from support.pgbouncer import pgbouncer
from unistatus.adapter.core import DualWriteAdapter
from unistatus.config import load_settings
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.errors import InputError
from unistatus.migration.check_claim import claim_run
from unistatus.observe.diagnose import generate_diagnostic
from unistatus.sim.seed import seed_legacy

pytestmark = pytest.mark.postgres

# Enough changes per connection that psycopg prepares its statements (after 5).
WALK = ["OTP_PENDING", "AWAITING_APPROVAL", "ADMIN_PENDING", "FUNDS_HELD"] + [
    "PROCESSING",
    "AWAITING_RESPONSE",
] * 4


def _prepare_threshold(engine: sa.Engine) -> Any:
    with engine.connect() as conn:
        return conn.connection.dbapi_connection.prepare_threshold  # type: ignore[union-attr]


def _statuses(db: Database, entity_ids: list[str]) -> dict[str, tuple[str, str]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT u.id, u.status, c.status FROM unified_transactions u "
                "JOIN cashouts c ON c.id = u.legacy_id AND u.legacy_system = 'CASHOUT' "
                "WHERE u.id = ANY(:ids)"
            ),
            {"ids": entity_ids},
        )
        return {r[0]: (r[1], r[2]) for r in rows}


def test_dual_writes_from_many_threads_through_a_transaction_pooler(pg: Database) -> None:
    """Every change of 8 threads' walks through PgBouncer succeeds and lands on both
    sides (before: a quarter failed, "prepared statement ... does not exist")."""
    adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    with pgbouncer(pg.url) as url:
        engine = create_engine(url, schema=pg.settings.schema)
        try:
            a = DualWriteAdapter(engine, settings=pg.settings)

            def walk(user: int) -> list[str]:
                created = a.create_transaction("WALLET_CASHOUT", user, "5", "USD")
                if not created.overall_success or created.entity_id is None:
                    return ["", str(created.error)]
                failed = []
                for status in WALK:
                    r = a.update_status(created.entity_id, status, "t", "pooler")
                    if not r.overall_success:
                        failed.append(str(r.error))
                        break  # its status did not move: the walk cannot go on
                return [created.entity_id, *failed]

            with ThreadPoolExecutor(8) as pool:
                walks = list(pool.map(walk, range(1, 25)))
            a.close()  # its statistics flushed while the pooler is there
        finally:
            engine.dispose()
    failures = [f for w in walks for f in w[1:]]
    assert not failures, failures[:3]
    statuses = _statuses(pg, [w[0] for w in walks])
    assert len(statuses) == 24
    assert set(statuses.values()) == {("AWAITING_RESPONSE", "AWAITING_RESPONSE")}


def test_an_adapter_made_from_a_url_connects_through_a_transaction_pooler(
    pg: Database,
) -> None:
    """The adapter's own engine bounds lock waits (``lock_timeout_ms``): it was a startup
    ``options`` parameter, which PgBouncer refuses ("unsupported startup parameter")."""
    adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    with pgbouncer(pg.url) as url:
        settings = pg.settings.model_copy(update={"database_url": url})
        a = DualWriteAdapter(url, settings=settings)
        try:
            created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
            assert created.overall_success, created.error
            for status in WALK[:7]:
                assert a.update_status(created.entity_id or "", status, "t", "t").overall_success
        finally:
            a.close()


def test_the_load_test_command_through_a_transaction_pooler(pg: Database) -> None:
    """As the user runs it: ``unistatus loadtest`` against PgBouncer, no error."""
    with pgbouncer(pg.url) as url:
        done = cli(
            url, "loadtest", "-n", "200", "-c", "8", "--mode", "DUAL_WRITE_LEGACY_PRIMARY", "--json"
        )
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert (report["errors"], report["consistency_rate"]) == (0, 1.0)


def test_a_direct_connection_keeps_its_lock_timeout_and_prepared_statements(
    pg: Database,
) -> None:
    engine = create_engine(pg.url, schema=pg.settings.schema, lock_timeout_ms=1234)
    try:
        assert _prepare_threshold(engine) == 5  # psycopg's default
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar_one() == "1234ms"
    finally:
        engine.dispose()


def test_the_prepared_statements_setting_overrides_what_is_found(pg: Database) -> None:
    """``prepared_statements = false``: never (a pooler not recognised as one);
    ``true``: always (PgBouncer 1.21 and newer keeps them, with
    ``max_prepared_statements``)."""
    direct = create_engine(pg.url, schema=pg.settings.schema, prepared_statements=False)
    try:
        assert _prepare_threshold(direct) is None
    finally:
        direct.dispose()
    with pgbouncer(pg.url) as url:
        pooled = create_engine(url, schema=pg.settings.schema, prepared_statements=True)
        try:
            assert _prepare_threshold(pooled) == 5
        finally:
            pooled.dispose()


def test_the_lock_timeout_is_not_set_on_a_pooled_server_connection(
    pg: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a transaction pooler a session setting would stay on the server connection
    for whoever gets it next: it is not set there, and the operator is told to set it
    for the role (else the adapter's writes would wait for a row lock without end)."""
    with pgbouncer(pg.url) as url:
        engine = create_engine(url, schema=pg.settings.schema, lock_timeout_ms=1234)
        try:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SHOW lock_timeout").scalar_one() == "0"
        finally:
            engine.dispose()
    said = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "ALTER ROLE ... SET lock_timeout = '1234ms'" in said[0].message


def _advisory_locks(db: Database) -> int:
    with db.engine.connect() as conn:
        q = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
            "database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return int(conn.exec_driver_sql(q).scalar_one())


def test_a_check_runs_claim_through_a_transaction_pooler_excludes_and_ends(
    pg: Database,
) -> None:
    """The claim on a check run (one process walks it) was a session advisory lock: behind
    a transaction pooler it stayed on whichever server connection took it, for whichever
    client got that connection next, after the run and after its process died (a resume
    refused for as long as the pooler kept the connection), and it let a second claim
    through on that same server connection."""
    with pgbouncer(pg.url) as url:
        engine = create_engine(url, schema=pg.settings.schema)
        try:
            with claim_run(engine, "run-1"):
                with pytest.raises(InputError, match="being walked by another process"):
                    with claim_run(engine, "run-1"):
                        pass
            assert _advisory_locks(pg) == 0, "the claim stayed on a pooled server connection"
            with claim_run(engine, "run-1"):
                pass
        finally:
            engine.dispose()


def test_the_setting_reaches_the_engines_unistatus_makes(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNISTATUS_PREPARED_STATEMENTS", "false")
    settings = load_settings(database_url=pg.url)
    assert settings.prepared_statements is False
    a = DualWriteAdapter(pg.url, settings=settings)
    try:
        assert _prepare_threshold(a.engine) is None
    finally:
        a.close()


def test_a_check_runs_claim_outlives_the_servers_idle_in_transaction_timeout(
    pg: Database,
) -> None:
    """The claim's transaction stays idle for the whole run: a server (or role) with
    ``idle_in_transaction_session_timeout`` would end it, the claim with it, and a
    second walker would get the run."""
    url = sa.engine.make_url(pg.url).update_query_dict(
        {"options": "-c idle_in_transaction_session_timeout=200"}
    )
    engine = create_engine(url.render_as_string(hide_password=False), schema=pg.settings.schema)
    try:
        with claim_run(engine, "run-2"):
            time.sleep(0.6)
            with pytest.raises(InputError, match="being walked by another process"):
                with claim_run(engine, "run-2"):
                    pass
        with claim_run(engine, "run-2"):
            pass
    finally:
        engine.dispose()


def _claim_session(db: Database) -> tuple[int, Any]:
    """The pid and backend_xmin of the session holding a check run's claim."""
    with db.engine.connect() as conn:
        q = (
            "SELECT a.pid, a.backend_xmin FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND "
            "l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        pid, xmin = conn.exec_driver_sql(q).one()
        return int(pid), xmin


@pytest.mark.parametrize("isolation", ["read\\ committed", "repeatable\\ read"])
def test_a_check_runs_claim_holds_back_no_vacuum(pg: Database, isolation: str) -> None:
    """The claim's transaction is open for the whole run: it must hold no snapshot, or
    vacuum could remove no row deleted meanwhile anywhere in the database (a run of
    hours on a busy database: every table bloats). Its statement's bound values kept
    a portal, and with it a snapshot, open; a REPEATABLE READ default kept one too."""
    url = sa.engine.make_url(pg.url).update_query_dict(
        {"options": f"-c default_transaction_isolation={isolation}"}
    )
    engine = create_engine(url.render_as_string(hide_password=False), schema=pg.settings.schema)
    try:
        with claim_run(engine, "run-3"):
            _, xmin = _claim_session(pg)
            assert xmin is None, "the claim holds a snapshot"
    finally:
        engine.dispose()


def test_a_check_runs_claim_lost_with_its_connection_ends_the_run_quietly(
    pg: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The claim's connection ended under it (the server restarted, an administrator's
    pg_terminate_backend): the run's own outcome stands, the claim's loss is logged.
    Ending the claim's transaction on the dead connection raised instead, after the
    run's report was stored, or in place of the run's own error."""
    with claim_run(pg.engine, "run-4"):
        pid, _ = _claim_session(pg)
        with pg.engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
    assert "claim" in caplog.text and "lost" in caplog.text
    with pytest.raises(KeyError, match="the run's own"):
        with claim_run(pg.engine, "run-5"):
            pid, _ = _claim_session(pg)
            with pg.engine.connect() as admin:
                admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            raise KeyError("the run's own")


def test_the_backfill_and_check_commands_through_a_transaction_pooler(pg: Database) -> None:
    """The backfill's workers (two by default), its chunk claims and throttle, and the
    check's systems at once, each on their own connections: all through PgBouncer."""
    seed_legacy(pg.engine, pg.settings, 3_000, seed=1)
    with pgbouncer(pg.url) as url:
        backfilled = cli(url, "backfill", "--json")
        assert backfilled.exit_code == 0, backfilled.output
        assert json.loads(backfilled.stdout)["inserted"] == 3_000
        checked = cli(url, "check", "--json")
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    assert (report["total"], report["consistent"]) == (3_000, 3_000)


def test_the_diagnostic_says_the_server_is_reached_through_a_pooler(pg: Database) -> None:
    """The first thing to look at when writes through a pooler are slower than direct."""
    with pgbouncer(pg.url) as url:
        engine = create_engine(url, schema=pg.settings.schema)
        try:
            report = generate_diagnostic(engine, pg.settings)
        finally:
            engine.dispose()
    connection = report["connection"]
    assert (connection["through_a_pooler"], connection["prepared_statements"]) == (True, False)
    assert connection["write_transactions"] == "read committed"
    assert connection["installed_in"] == "public"


def test_a_check_runs_claim_is_not_live_traffic(pg: Database) -> None:
    """Held open for the run, the claim's session is "idle in transaction": unnamed, a
    backfill beside the check counted it as live traffic for the whole run (and slowed
    for it), and an administrator saw an anonymous long transaction. It carries
    unistatus's tool name."""
    engine = create_engine(pg.url, schema=pg.settings.schema, application_name="unistatus/check")
    backfill = create_engine(
        pg.url, schema=pg.settings.schema, application_name="unistatus/backfill"
    )
    ops = ops_for(backfill)
    try:
        time.sleep(1.1)  # the sessions set up so far are more than a second idle
        with backfill.connect() as watcher:  # as the backfill's probe looks
            before = ops.live_sessions(watcher)
            watcher.rollback()
            with claim_run(engine, "run-6"):
                time.sleep(1.1)
                during = ops.live_sessions(watcher)
                watcher.rollback()
                pid, _ = _claim_session(pg)
                named = watcher.exec_driver_sql(
                    f"SELECT application_name FROM pg_stat_activity WHERE pid = {pid}"
                ).scalar_one()
        assert during == before, "the claim's session counted as live traffic"
        assert named.startswith("unistatus/")
    finally:
        engine.dispose()
        backfill.dispose()
