"""A mode switch's wait for the exclusive mode lock (PostgreSQL, db/mode_lock_wait.py):
it waits out a steady stream of writers' transactions of a few hundred ms, names only
the sessions that block it (as they are when it gives up), and leaves the transaction's
own ``lock_timeout`` as it found it. (Writers going on while it waits, and the give-up
naming a caller's open transaction: tests/adapter/test_caller_edges.py.)"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from support.adapters import adapter_in
from support.blocking import queue_behind_any_holder, wait_until_it_blocks
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.cli import app
from unistatus.db import mode_lock_wait
from unistatus.db.control import get_mode, set_mode
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import ModeLockBusyError

pytestmark = pytest.mark.postgres

M = DualWriteMode
CASHOUT, ESCROW = LegacySystemType.CASHOUT, LegacySystemType.ESCROW


def _open_change(
    engine: sa.Engine, adapter: DualWriteAdapter, entity: str, status: str
) -> sa.Connection:
    """A caller's transaction holding a status change of ``entity``, left open."""
    conn = engine.connect()
    conn.begin()
    result = adapter.update_status(entity, status, "app", "app", connection=conn)
    assert result.overall_success, result.error
    return conn


def test_a_steady_stream_of_transactions_of_a_few_hundred_ms_is_waited_out(pg: Database) -> None:
    """Ten writers whose transactions each stay open 0.3-0.6 s, with short random gaps:
    there is nearly always one in flight with more than 200 ms to go, so a switch that
    queued 200 ms at a time rarely got the lock and gave up, blaming ordinary traffic.
    Attempts that grow (and none behind a transaction open for long) get it."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    entities = [
        str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id) for _ in range(10)
    ]
    stop = threading.Event()
    failures: list[str] = []

    def write(entity: str) -> None:
        rng = random.Random(entity)
        time.sleep(rng.uniform(0.0, 0.5))  # not in step with each other
        status = "PENDING"
        while not stop.is_set():
            target = "AWAITING_RESPONSE" if status == "PROCESSING" else "PROCESSING"
            with pg.engine.connect() as conn:
                conn.begin()
                result = a.update_status(entity, target, "app", "app", connection=conn)
                time.sleep(rng.uniform(0.3, 0.6))  # the application's own work
                conn.commit()
            if result.overall_success:
                status = target
            elif "LEGACY_ONLY" not in str(result.error):
                failures.append(str(result.error))
            time.sleep(rng.uniform(0.0, 0.2))

    writers = [threading.Thread(target=write, args=(e,)) for e in entities]
    for t in writers:
        t.start()
    try:
        time.sleep(1.5)
        patient = pg.settings.model_copy(update={"mode_lock_wait_seconds": 15.0})
        started = time.monotonic()
        set_mode(pg.engine, M.LEGACY_ONLY, system="CASHOUT", reason="r", settings=patient)
        took = time.monotonic() - started
    finally:
        stop.set()
        for t in writers:
            t.join(30)
    assert get_mode(pg.engine, CASHOUT) is M.LEGACY_ONLY
    assert took < 8.0, f"the switch took {took:.1f} s"
    assert not failures


def test_only_the_sessions_that_block_it_are_named_as_they_are_when_it_gives_up(
    pg: Database,
) -> None:
    """An escrow switch waits for an escrow caller, not for a cashout caller (which
    holds the installation's lock shared too, as every writer does); the holders named
    are read afresh (a session that began holding it after the first reading is named
    with its application; one that ended is not)."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    cashout = str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)
    escrows = [str(a.create_transaction("ESCROW", 1, "5", "USD").entity_id) for _ in range(2)]
    first_app = create_engine(pg.url, application_name="first-escrow-app")
    later_app = create_engine(pg.url, application_name="later-escrow-app")
    hurried = pg.settings.model_copy(update={"mode_lock_wait_seconds": 3.0})
    refused: list[BaseException] = []

    def switch() -> None:
        try:
            set_mode(pg.engine, M.LEGACY_ONLY, system="ESCROW", reason="r", settings=hurried)
        except ModeLockBusyError as exc:
            refused.append(exc)

    other_system = _open_change(pg.engine, a, cashout, "PROCESSING")
    first = _open_change(first_app, a, escrows[0], "AWAITING_PAYMENT")
    try:
        switcher = threading.Thread(target=switch)
        switcher.start()
        time.sleep(1.0)
        later = _open_change(later_app, a, escrows[1], "AWAITING_PAYMENT")
        time.sleep(0.5)
        first.rollback()
        switcher.join(30)
        later.rollback()
    finally:
        for conn in (other_system, first):
            conn.close()
        first_app.dispose()
        later_app.dispose()
    assert refused, "the switch did not give up"
    error = refused[0]
    assert isinstance(error, ModeLockBusyError)
    assert [h["application_name"] for h in error.holders] == ["later-escrow-app"]
    assert "mode lock of ESCROW" in str(error)
    assert get_mode(pg.engine, ESCROW) is M.DUAL_WRITE_LEGACY_PRIMARY


def test_the_transactions_own_lock_timeout_is_left_as_it_was(pg: Database) -> None:
    ops = ops_for(pg.engine)
    with pg.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET LOCAL lock_timeout = '1234ms'")
        ops.mode_exclusive_lock(conn, CASHOUT)
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar_one() == "1234ms"


def test_the_command_gives_up_in_one_line_with_exit_code_2(pg: Database) -> None:
    """`unistatus mode set` behind a transaction left open: after the
    UNISTATUS_MODE_LOCK_WAIT_SECONDS the operator set, one line naming the session."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    entity = str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)
    shop = create_engine(pg.url, application_name="shop-api")
    held = _open_change(shop, a, entity, "PROCESSING")
    try:
        done = CliRunner().invoke(
            app,
            ["--database-url", pg.url, "mode", "set", "LEGACY_ONLY", "--system", "cashout"]
            + ["--reason", "pause cashouts"],
            env={"UNISTATUS_MODE_LOCK_WAIT_SECONDS": "1"},
        )
    finally:
        held.rollback()
        held.close()
        shop.dispose()
    assert done.exit_code == 2, done.output
    err = done.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert "gave up after 1 s waiting for the mode lock of CASHOUT" in err
    assert "(shop-api, idle in transaction" in err
    assert get_mode(pg.engine, CASHOUT) is M.DUAL_WRITE_LEGACY_PRIMARY


def test_a_vacuum_holding_a_table_is_queued_for_not_waited_out(pg: Database) -> None:
    """A lock taken with tables' SHARE locks (retirement's) and a vacuum or analyze of
    one of them: counted as a long transaction after 2 s, it was only polled for, so the
    server, which cancels an automatic vacuum for a lock queued behind it for
    deadlock_timeout, never did, and a long vacuum of a big legacy table made retirement
    give up. Its hold (SHARE UPDATE EXCLUSIVE) is now queued for."""
    vacuum = pg.engine.connect()
    vacuum.exec_driver_sql("LOCK TABLE cashouts IN SHARE UPDATE EXCLUSIVE MODE")
    pid = int(vacuum.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    with ThreadPoolExecutor(1) as pool:
        try:
            taking = pool.submit(_take_with_tables, pg, ["cashouts"])
            time.sleep(2.5)  # the vacuum's transaction is a "long" one now
            queued = wait_until_it_blocks(pg.engine, pid, seconds=4)
            assert queued, "only polled for the vacuum: the server would never cancel it"
        finally:
            vacuum.close()
        taking.result(30)


def _take_with_tables(db: Database, tables: list[str]) -> None:
    """The installation's mode lock with ``tables`` locked SHARE (as retirement takes
    it), in a transaction of its own, then let go."""
    ops = ops_for(db.engine)
    with ops.write_transaction() as conn:
        ops.mode_exclusive_lock(conn, None, wait_seconds=20, share_locked=tables)


def test_after_its_first_lock_an_attempt_waits_briefly_for_the_rest(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holding one table's SHARE lock, an attempt waited for the next locks as long as
    for the first (attempts grow to 2 s under a stream of writers). A caller's
    transaction (the mode lock shared) that then wrote the table it held waited for it,
    and when the attempt came to the mode lock after another writer let it by, the
    caller had waited longest: its deadlock check ended the caller. The attempt now
    waits for the rest half deadlock_timeout in all, and the next one queues for the
    busy one first, holding nothing."""
    monkeypatch.setattr(mode_lock_wait, "FIRST_ATTEMPT_MS", 1_500)  # grown, as under traffic
    queue_behind_any_holder(monkeypatch)  # the two transactions open before the attempt
    ops = ops_for(pg.engine)
    caller, other = pg.engine.connect(), pg.engine.connect()
    caller.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(ops.mode_lock_key)))
    other.exec_driver_sql("UPDATE escrows SET updated_at = updated_at WHERE id < 0")
    other_pid = int(other.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    def write() -> None:
        caller.exec_driver_sql("UPDATE cashouts SET updated_at = updated_at WHERE id < 0")
        caller.commit()

    with ThreadPoolExecutor(2) as pool:
        try:
            taking = pool.submit(_take_with_tables, pg, ["cashouts", "escrows"])
            # The attempt holds cashouts, waits for escrows.
            assert wait_until_it_blocks(pg.engine, other_pid, seconds=10)
            writing = pool.submit(write)  # the caller writes cashouts: it waits for the attempt
            time.sleep(0.3)
            other.commit()  # escrows free: the attempt goes on to the mode lock
            writing.result(30)
        finally:
            other.close()
            caller.close()
        taking.result(30)


CONTROL_HELD = {
    "table": "LOCK TABLE unistatus_control IN ACCESS EXCLUSIVE MODE",
    # A session holding the rows a switch writes (an operator's open UPDATE).
    "rows": "SELECT key FROM unistatus_control FOR UPDATE",
}


@pytest.mark.parametrize("held_so", sorted(CONTROL_HELD))
def test_a_switch_behind_a_locked_control_table_names_the_holder_in_one_line(
    pg: Database, monkeypatch: pytest.MonkeyPatch, held_so: str
) -> None:
    """`mode set` behind a session holding unistatus's control table ACCESS EXCLUSIVE (a
    migration's DDL, a DBA's LOCK TABLE) failed with the server's raw text, naming no
    one: "cannot switch mode: canceling statement due to lock timeout / LINE 2: FROM
    unistatus_control / ^". One line naming the holder, nothing changed. Behind rows
    held (no table lock to name it by), it says so, not "no session any more"."""
    from unistatus.db import control  # noqa: PLC0415

    monkeypatch.setattr(control, "SWITCH_LOCK_MS", 1_000)
    for there_and_back in (M.DUAL_WRITE_LEGACY_PRIMARY, M.LEGACY_ONLY):  # every mode row
        set_mode(pg.engine, there_and_back, reason="t")
    dba = create_engine(pg.url, application_name="dba-session")
    try:
        with dba.connect() as held:
            held.exec_driver_sql(CONTROL_HELD[held_so])
            pid = int(held.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            done = CliRunner().invoke(
                app,
                ["--database-url", pg.url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY"]
                + ["--reason", "t"],
            )
            held.rollback()
    finally:
        dba.dispose()
    assert done.exit_code == 2, done.output
    err = done.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "LINE" not in err, err
    assert "nothing changed" in err and "no session any more" not in err, err
    if held_so == "table":
        assert f"pid {pid} (dba-session, idle in transaction" in err, err
        assert "AccessExclusiveLock on unistatus_control" in err, err
    else:
        assert "another transaction" in err, err
    assert get_mode(pg.engine, CASHOUT) is M.LEGACY_ONLY
