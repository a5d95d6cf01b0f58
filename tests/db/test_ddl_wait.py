"""A schema change's attempts (unistatus.db.ddl_wait) behind a young transaction: each
waits little, writers get through between them, and it goes through once the
transaction ends. (Behind a long one, and the messages: tests/migration/
test_ddl_lock_waits.py.)"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from conftest import Database
from support.blocking import wait_until_it_blocks, write_waited
from unistatus.db.ddl_wait import Changes, run_politely, table_holders
from unistatus.db.engine import create_engine
from unistatus.errors import TableLockBusyError

ATTEMPT_MS = 200
# A writer queued behind one attempt waits about ATTEMPT_MS; the margin is the machine's.
LONGEST_WRITE_SECONDS = ATTEMPT_MS / 1000 + 0.5


@pytest.mark.postgres
def test_behind_a_young_reader_each_attempt_waits_little_then_it_goes_through(
    scratch_pg: Database,
) -> None:
    engine = scratch_pg.engine
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ddl_probe (id int PRIMARY KEY, v int)")
        conn.exec_driver_sql("INSERT INTO ddl_probe VALUES (1, 0)")
    reading, stop = threading.Event(), threading.Event()
    took: list[float] = []

    def reader() -> None:  # a report of about a second, young when the change begins
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM ddl_probe")
            reading.set()
            time.sleep(1.0)
            conn.rollback()

    def writer() -> None:
        while not stop.is_set():
            with engine.begin() as conn:
                took.append(write_waited(conn, "UPDATE ddl_probe SET v = v + 1 WHERE id = 1"))
            time.sleep(0.02)

    attempts: list[int] = []

    def attempt(ms: int) -> str:
        attempts.append(ms)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
            conn.exec_driver_sql("ALTER TABLE ddl_probe ADD COLUMN w int")
        return "done"

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    threads[0].start()
    reading.wait(10)
    with engine.connect() as conn:
        held = table_holders(conn, Changes(exclusive=["ddl_probe"]))
    assert [h["locks"] for h in held] == [["AccessShareLock on ddl_probe"]], held
    threads[1].start()
    try:
        done = run_politely(
            engine,
            attempt,
            lambda conn: Changes(exclusive=["ddl_probe"]),
            lock_ms=ATTEMPT_MS,
            what="add a column",
            command="t",
            wait_seconds=15,
        )
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert done == "done" and len(attempts) >= 2 and set(attempts) == {ATTEMPT_MS}, attempts
    assert max(took) < LONGEST_WRITE_SECONDS, sorted(took)[-3:]


@pytest.mark.postgres
def test_a_writer_blocks_share_row_exclusive_a_reader_does_not(scratch_pg: Database) -> None:
    """What CREATE TRIGGER waits for (SHARE ROW EXCLUSIVE): a writer, not a reader; an
    ACCESS EXCLUSIVE request waits for both."""
    engine = scratch_pg.engine
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ddl_probe (id int PRIMARY KEY, v int)")
    with engine.connect() as reader, engine.connect() as look:
        reader.exec_driver_sql("SELECT count(*) FROM ddl_probe")
        assert not table_holders(look, Changes(share_row=["ddl_probe"]))
        assert table_holders(look, Changes(exclusive=["ddl_probe"]))
        reader.exec_driver_sql("INSERT INTO ddl_probe VALUES (1, 0)")
        held = table_holders(look, Changes(share_row=["ddl_probe"]))
        assert [h["locks"] for h in held] == [["RowExclusiveLock on ddl_probe"]], held
        reader.rollback()


@pytest.mark.postgres
@pytest.mark.parametrize("engine_lock_ms", [300, 0], ids=["engine-lock-timeout", "none"])
def test_a_look_kept_waiting_by_a_lock_is_busy_and_names_its_holder(
    scratch_pg: Database, engine_lock_ms: int
) -> None:
    """The look before each attempt reads (a control table, as a retirement's does):
    behind a session holding that table ACCESS EXCLUSIVE (a migration's DDL, a LOCK
    TABLE) the read waits. That wait is one more sign of busy tables: no attempt, looked
    at again until the deadline, which names the holder; it neither fails with the
    engine's lock_timeout nor, without one, waits past the deadline."""
    with scratch_pg.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ddl_probe (id int PRIMARY KEY, v int)")
        conn.exec_driver_sql("CREATE TABLE ddl_probe_control (key text PRIMARY KEY, value text)")
    engine = create_engine(scratch_pg.url, lock_timeout_ms=engine_lock_ms)
    holder = sa.create_engine(scratch_pg.url, connect_args={"application_name": "dba-session"})
    attempts: list[int] = []

    def changes(conn: sa.Connection) -> Changes:
        conn.exec_driver_sql("SELECT value FROM ddl_probe_control WHERE key = 'capture'")
        return Changes(exclusive=["ddl_probe"])

    def attempt(ms: int) -> str:
        attempts.append(ms)
        return "done"

    outcome: list[BaseException | str] = []

    def change() -> None:
        try:
            outcome.append(
                run_politely(
                    engine,
                    attempt,
                    changes,
                    lock_ms=ATTEMPT_MS,
                    what="add a column",
                    command="unistatus t",
                    wait_seconds=1.0,
                )
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the assertions below
            outcome.append(exc)

    try:
        with holder.connect() as held:
            held.exec_driver_sql("LOCK TABLE ddl_probe_control IN ACCESS EXCLUSIVE MODE")
            pid = int(held.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            started = time.monotonic()
            worker = threading.Thread(target=change, daemon=True)
            worker.start()
            worker.join(6)
            took = time.monotonic() - started
            held.rollback()
        worker.join(10)
    finally:
        engine.dispose()
        holder.dispose()
    assert took < 5, f"the look waited {took:.1f} s, past its deadline (1 s)"
    (result,) = outcome
    assert isinstance(result, TableLockBusyError), repr(result)
    assert f"pid {pid} (dba-session" in str(result), str(result)
    assert "AccessExclusiveLock on ddl_probe_control" in str(result), str(result)
    assert "`unistatus t`" in str(result) and not attempts, attempts


@pytest.mark.postgres
def test_a_look_kept_waiting_behind_a_queued_ddl_names_it_and_no_temp_table(
    scratch_pg: Database,
) -> None:
    """A look kept waiting by a schema change queued (not granted) on the table it reads,
    behind a long reader, named no one ("no session any more"); and every session holding
    any relation ACCESS EXCLUSIVE was a suspect, a temporary table's maker too. It names
    the queued change, and no session busy with a temporary table of its own."""
    with scratch_pg.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ddl_probe (id int PRIMARY KEY, v int)")
        conn.exec_driver_sql("CREATE TABLE ddl_probe_control (key text PRIMARY KEY, value text)")
    engine = create_engine(scratch_pg.url, lock_timeout_ms=0)

    def session(name: str) -> sa.Engine:
        return sa.create_engine(scratch_pg.url, connect_args={"application_name": name})

    reader, ddl, temp = session("report"), session("queued-ddl"), session("temp-maker")

    def changes(conn: sa.Connection) -> Changes:
        conn.exec_driver_sql("SELECT value FROM ddl_probe_control WHERE key = 'capture'")
        return Changes(exclusive=["ddl_probe"])

    def queue_the_ddl(pid: list[int]) -> None:
        with ddl.connect() as conn:
            pid.append(int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()))
            conn.exec_driver_sql("LOCK TABLE ddl_probe_control IN ACCESS EXCLUSIVE MODE")
            conn.rollback()

    try:
        with reader.connect() as read, temp.connect() as made:
            read.exec_driver_sql("SELECT count(*) FROM ddl_probe_control")
            made.exec_driver_sql("CREATE TEMP TABLE scratch (x int)")
            pid: list[int] = []
            queued = threading.Thread(target=queue_the_ddl, args=(pid,), daemon=True)
            queued.start()
            assert wait_until_it_blocks(scratch_pg.engine, _reader_pid(read))
            with pytest.raises(TableLockBusyError) as busy:
                run_politely(
                    engine,
                    lambda ms: "done",
                    changes,
                    lock_ms=ATTEMPT_MS,
                    what="add a column",
                    command="unistatus t",
                    wait_seconds=1.0,
                )
            read.rollback()
            made.rollback()
        queued.join(10)
    finally:
        for e in (engine, reader, ddl, temp):
            e.dispose()
    message = str(busy.value)
    assert f"pid {pid[0]} (queued-ddl" in message, message
    assert "queued request for AccessExclusiveLock on ddl_probe_control" in message, message
    assert "temp-maker" not in message, message


def _reader_pid(conn: sa.Connection) -> int:
    return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
