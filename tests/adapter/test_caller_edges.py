"""The caller's transaction where real applications go wrong (found by a review).

An AUTOCOMMIT connection (every statement its own transaction), a transaction the
caller's own statement already aborted (PostgreSQL then turns COMMIT into ROLLBACK), a
connection lost before the first write, and an ORM Session whose new objects are not
flushed yet: each is either refused, counted as what it is, or works as the ORM would.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from conftest import Database
from support.adapters import adapter_in
from support.blocking import WRITE_BESIDE_A_WAITING_SWITCH_SECONDS, collector_paused
from unistatus import CallerTransactionError, DualWriteAdapter, DualWriteMode, OperationEvent
from unistatus.db.control import get_mode, history, set_mode
from unistatus.db.engine import create_engine
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, ModeLockBusyError
from unistatus.migration.replay import replay_pending

M = DualWriteMode


def watched(db: Database) -> tuple[DualWriteAdapter, str, list[OperationEvent]]:
    """An adapter in DUAL_WRITE_LEGACY_PRIMARY, a PENDING cashout, its events."""
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    return a, str(created.entity_id), events


def each_refused(a: DualWriteAdapter, entity_id: str, connection: object, said: str) -> None:
    """A change, a create and a read given ``connection``: each an InputError saying
    ``said``."""
    with pytest.raises(InputError, match=said):
        a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=connection)
    with pytest.raises(InputError, match=said):
        a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", connection=connection)
    with pytest.raises(InputError, match=said):
        a.get_transaction_status(entity_id, connection=connection)


def unified_status(db: Database, entity_id: str) -> str:
    return str(db.scalar("SELECT status FROM unified_transactions WHERE id = :i", i=entity_id))


def test_an_autocommit_connection_is_refused(pg: Database) -> None:
    """``begin()`` on an AUTOCOMMIT connection begins nothing at the database: each of
    the adapter's statements would commit on its own (the caller's rollback undid
    nothing, reported as rolled back) and hold no mode lock (a mode switch did not wait
    for it). Refused before anything is written."""
    a, entity_id, events = watched(pg)
    with pg.engine.connect() as plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        with conn.begin():
            with pytest.raises(InputError, match="AUTOCOMMIT"):
                a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
            with pytest.raises(InputError, match="AUTOCOMMIT"):
                a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", connection=conn)
    assert unified_status(pg, entity_id) == "PENDING"
    assert pg.count("cashouts") == 1
    assert events == []  # not even counted as an operation: the connection was refused


def test_an_autocommit_connection_of_the_applications_sqlite_engine_is_refused(
    sqlite_db: Database,
) -> None:
    """The application's own SQLite engine (no BEGIN of unistatus's in its ``begin``
    hook) in AUTOCOMMIT: pysqlite then never begins a transaction, so ``begin()`` is
    SQLAlchemy's bookkeeping only. It was not refused (Python 3.11's sqlite3 has no
    ``autocommit`` attribute): the caller's rollback undid nothing, and the write was
    reported as rolled back."""
    a, entity_id, events = watched(sqlite_db)
    app = sa.create_engine(sqlite_db.url)
    try:
        with app.connect() as plain:
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            with conn.begin():
                with pytest.raises(InputError, match="AUTOCOMMIT"):
                    a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", connection=conn)
                with pytest.raises(InputError, match="AUTOCOMMIT"):
                    a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
    finally:
        app.dispose()
    assert unified_status(sqlite_db, entity_id) == "PENDING"
    assert sqlite_db.count("cashouts") == 1
    assert sqlite_db.count("unified_status_history") == 1
    assert events == []


def test_a_real_sqlite_transaction_is_written_in_whatever_engine_began_it(
    sqlite_db: Database,
) -> None:
    """What the SQLite AUTOCOMMIT refusal keeps. The application's plain engine (pysqlite
    defers its BEGIN to the first INSERT/UPDATE/DELETE: none is open when the adapter is
    called) gets one before the adapter's first write, the mode lock's UPDATE, so the
    caller's rollback undoes every row and its commit keeps them; a Session on it too.
    unistatus's engine in AUTOCOMMIT is a real transaction (its ``begin`` hook sends
    BEGIN)."""
    a, entity_id, events = watched(sqlite_db)
    app = sa.create_engine(sqlite_db.url)
    own = sqlite_db.engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        for engine in (app, own):
            with engine.connect() as conn, conn.begin() as tx:
                if engine is app:  # pysqlite has not begun yet
                    assert not conn.connection.dbapi_connection.in_transaction
                a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", connection=conn)
                a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
                tx.rollback()
            with Session(engine) as session:
                a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=session)
                session.rollback()
        assert unified_status(sqlite_db, entity_id) == "PENDING"
        assert sqlite_db.count("cashouts") == 1
        assert sqlite_db.count("unified_status_history") == 1
        assert [(e.success, e.rolled_back) for e in events] == [(False, True)] * 6
        with app.connect() as conn, conn.begin():
            a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
        assert unified_status(sqlite_db, entity_id) == "PROCESSING"
    finally:
        app.dispose()


def test_a_savepoint_of_the_applications_plain_sqlite_engine_is_refused(
    sqlite_db: Database,
) -> None:
    """pysqlite's own transaction handling sends no BEGIN before a SAVEPOINT: the
    savepoint itself opens the transaction, and its RELEASE commits it. The adapter's
    write in ``begin_nested()`` was committed by the block's end, the caller's rollback
    after it undid nothing, and the write was reported rolled back. Refused, as SQLAlchemy
    documents that combination broken; unistatus's engine (and the recipe) take it."""
    a, entity_id, events = watched(sqlite_db)
    app = sa.create_engine(sqlite_db.url)
    try:
        with Session(app) as session:
            session.begin()
            with session.begin_nested():
                with pytest.raises(InputError, match="SAVEPOINT"):
                    a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=session)
            session.rollback()
        with Session(sqlite_db.engine) as session:  # unistatus's engine: a real BEGIN
            session.begin()
            with session.begin_nested():
                a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=session)
            session.rollback()
    finally:
        app.dispose()
    assert unified_status(sqlite_db, entity_id) == "PENDING"
    assert sqlite_db.count("unified_status_history") == 1
    assert [(e.success, e.rolled_back) for e in events] == [(False, True)]


def test_a_commit_the_database_turned_into_a_rollback_is_not_a_kept_write(pg: Database) -> None:
    """The caller's own statement failed after the adapter's write, the caller went on
    and committed: PostgreSQL answers COMMIT with ROLLBACK, no error. The write was
    reported as kept (counted as a success by the gates and the error rate)."""
    a, entity_id, events = watched(pg)
    with pg.engine.connect() as conn:
        conn.begin()
        assert a.update_status(entity_id, "PROCESSING", "r", "svc", connection=conn).changed
        with pytest.raises(sa.exc.DBAPIError):
            conn.exec_driver_sql("SELECT 1/0")
        conn.commit()
    assert unified_status(pg, entity_id) == "PENDING"
    assert [(e.success, e.rolled_back) for e in events] == [(False, True)]
    assert events[0].error is not None and "had failed" in events[0].error

    events.clear()
    with Session(pg.engine) as session:
        a.update_status(entity_id, "PROCESSING", "r", "svc", connection=session)
        with pytest.raises(sa.exc.DBAPIError):
            session.execute(sa.text("SELECT 1/0"))
        session.commit()
    assert unified_status(pg, entity_id) == "PENDING"
    assert [(e.success, e.rolled_back) for e in events] == [(False, True)]


def test_a_write_into_a_transaction_the_caller_already_failed_is_refused(pg: Database) -> None:
    """The caller's own statement aborted the transaction, then it calls the adapter:
    the caller's error, refused the same whether or not the adapter wrote earlier in
    that transaction (the first write of a transaction was counted as refused, a later
    one as a database failure)."""
    a, entity_id, events = watched(pg)
    seen = []
    for earlier_write in (False, True):
        events.clear()
        with pg.engine.connect() as conn:
            conn.begin()
            if earlier_write:
                a.update_status(entity_id, "PROCESSING", "r", "svc", connection=conn)
            with pytest.raises(sa.exc.DBAPIError):
                conn.exec_driver_sql("SELECT 1/0")
            with pytest.raises(CallerTransactionError, match="already failed"):
                a.update_status(entity_id, "AWAITING_RESPONSE", "r", "svc", connection=conn)
            conn.rollback()
        refused = [e for e in events if e.operation == "update_status" and not e.rolled_back]
        seen.append([(e.success, e.refused) for e in refused])
    assert seen == [[(True, True)], [(True, True)]]


def test_a_connection_lost_before_the_first_write_is_a_database_failure(pg: Database) -> None:
    """The server ended the caller's connection (a restart, a killed backend) before
    the first write of its transaction: a database failure, counted as one (it was
    counted as a refusal, out of the error rate the alerts and gates read)."""
    a, entity_id, events = watched(pg)
    with pg.engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        conn.commit()
        with pg.engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        conn.begin()
        with pytest.raises(CallerTransactionError):
            a.update_status(entity_id, "PROCESSING", "r", "svc", connection=conn)
    assert [(e.success, e.refused) for e in events] == [(False, False)]


class Base(DeclarativeBase):
    pass


class Cashout(Base):  # the legacy application's own model of its table
    __tablename__ = "cashouts"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int]
    amount: Mapped[Decimal] = mapped_column(sa.Numeric(18, 2))
    currency: Mapped[str]
    status: Mapped[str]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


def test_an_orm_sessions_new_objects_are_flushed_first(db: Database) -> None:
    """A legacy row the application added to its Session (not flushed yet) is seen by
    the adapter, as by any ``session.execute()`` (autoflush): it was not found."""
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with Session(db.engine) as session:
        session.add(
            Cashout(
                id=77,
                user_id=1,
                amount=Decimal("5"),
                currency="USD",
                status="PENDING",
                created_at=now,
                updated_at=now,
            )
        )
        r = a.update_status("cashout:77", "PROCESSING", "paid", "svc", connection=session)
        assert r.overall_success, r.error
        session.commit()
    assert unified_status(db, "UTX100000000000077") == "PROCESSING"


def test_a_mode_switch_still_waits_for_a_callers_transaction(pg: Database) -> None:
    """What the AUTOCOMMIT refusal keeps: in a real transaction the mode lock is held
    until the caller ends it."""
    a, entity_id, _ = watched(pg)
    switched = threading.Event()

    def switch() -> None:
        set_mode(pg.engine, M.LEGACY_ONLY, reason="pause", actor="test")
        switched.set()

    with pg.engine.connect() as conn, collector_paused():
        conn.begin()
        a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
        worker = threading.Thread(target=switch)
        worker.start()
        assert not switched.wait(1.0)
        conn.commit()
        worker.join(10)
    assert switched.is_set()


def test_a_switch_waiting_for_a_callers_transaction_does_not_stop_other_writers(
    pg: Database,
) -> None:
    """While a switch waits for a caller's long transaction, the system's other writers
    go on: PostgreSQL queues a new shared lock behind a waiting exclusive one, so every
    adapter write of the system waited behind the switch for the caller's commit (a
    live service stopped by one slow transaction and an operator's `mode set`). The
    switch still applies once the caller commits."""
    a, entity_id, _ = watched(pg)
    other = str(a.create_transaction("WALLET_CASHOUT", 2, "5", "USD").entity_id)
    switched = threading.Event()

    def switch() -> None:
        set_mode(pg.engine, M.LEGACY_ONLY, system="CASHOUT", reason="pause", actor="test")
        switched.set()

    wrote = threading.Event()
    took: list[float] = []

    def write_another() -> None:  # another writer of the same system, meanwhile
        started = time.monotonic()
        done = a.update_status(other, "PROCESSING", "paid", "svc")
        took.append(time.monotonic() - started)
        assert done.overall_success, done.error
        wrote.set()

    with pg.engine.connect() as conn, collector_paused():
        conn.begin()
        a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
        worker = threading.Thread(target=switch)
        worker.start()
        time.sleep(0.5)  # the switch waits for the caller's transaction
        writer = threading.Thread(target=write_another)
        writer.start()
        # Before the fix it waited for the caller's commit below, so past the bound.
        wrote.wait(WRITE_BESIDE_A_WAITING_SWITCH_SECONDS + 0.5)
        assert not switched.is_set()
        conn.commit()
        writer.join(30)
        worker.join(30)
    assert wrote.is_set(), "the other writer failed"
    assert took[0] < WRITE_BESIDE_A_WAITING_SWITCH_SECONDS, (
        f"a writer waited {took[0]:.1f} s behind a waiting switch"
    )
    assert switched.is_set()
    assert get_mode(pg.engine, LegacySystemType.CASHOUT) is M.LEGACY_ONLY


def test_a_switch_gives_up_on_a_transaction_left_open_and_names_it(pg: Database) -> None:
    """A caller's transaction left open (for longer than a switch waits: 1 s here, the
    ``mode_lock_wait_seconds`` setting) makes the switch give up with the session
    named, nothing changed: not hang, and not hold the system's writers back while it
    waits."""
    hurried = pg.settings.model_copy(update={"mode_lock_wait_seconds": 1.0})
    a, entity_id, _ = watched(pg)
    shop = create_engine(pg.url, application_name="shop-api")
    before = len(history(pg.engine))
    try:
        with shop.connect() as conn:
            conn.begin()
            a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            started = time.monotonic()
            with pytest.raises(ModeLockBusyError) as refused:
                set_mode(pg.engine, M.LEGACY_ONLY, system="CASHOUT", reason="r", settings=hurried)
            assert time.monotonic() - started < 5.0
            conn.rollback()
    finally:
        shop.dispose()
    message = str(refused.value)
    assert f"pid {pid} (shop-api, idle in transaction" in message
    assert "mode lock of CASHOUT" in message and "nothing was changed" in message
    assert [h["pid"] for h in refused.value.holders] == [pid]
    assert refused.value.holders[0]["open_seconds"] >= 0.9  # open since before the switch
    assert get_mode(pg.engine, LegacySystemType.CASHOUT) is M.DUAL_WRITE_LEGACY_PRIMARY
    assert len(history(pg.engine)) == before  # no control-log row


def test_a_replay_gives_up_on_the_mode_lock_within_its_own_time(pg: Database) -> None:
    """The replay bounds its lock waits itself (``lock_wait_seconds``): its wait for the
    mode lock behind a caller's open transaction ends within it, naming the caller."""
    a, entity_id, _ = watched(pg)
    with pg.engine.connect() as conn:
        conn.begin()
        a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
        started = time.monotonic()
        with pytest.raises(ModeLockBusyError, match="mode lock of CASHOUT"):
            replay_pending(
                pg.engine, pg.settings, system=LegacySystemType.CASHOUT, lock_wait_seconds=1.0
            )
        took = time.monotonic() - started
        conn.rollback()
    assert took < 5.0, f"the replay waited {took:.0f} s for the mode lock"


@pytest.fixture
def app_schema(pg: Database) -> Iterator[str]:
    """A schema of the application's own, where its engine's translate map sends its
    models (per tenant, per service)."""
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA app_own")
        conn.exec_driver_sql("CREATE TABLE app_own.orders (id serial PRIMARY KEY, utx text)")
    try:
        yield "app_own"
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA app_own CASCADE")


@pytest.mark.parametrize("fallback", ["strict", "primary_wins"])
@pytest.mark.parametrize("mode", [M.LEGACY_ONLY, M.DUAL_WRITE_LEGACY_PRIMARY, M.UNIFIED_ONLY])
def test_the_callers_own_translate_map_is_not_applied_to_unistatus_tables(
    pg: Database, app_schema: str, mode: DualWriteMode, fallback: str
) -> None:
    """An application engine with ``schema_translate_map={None: "app_own"}`` for its own
    models: the adapter's statements (the locked path's, of the default layout) were
    sent to that schema too ("relation app_own.unistatus_control does not exist")."""
    a = adapter_in(pg, mode, record_stats=False, fallback=fallback)
    orders = sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("utx", sa.Text),
    )
    app = pg.engine.execution_options(schema_translate_map={None: app_schema})
    with app.connect() as conn, conn.begin():
        created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", connection=conn)
        assert created.overall_success, created.error
        changed = a.update_status(created.entity_id, "PROCESSING", "r", "svc", connection=conn)
        assert changed.overall_success, changed.error
        conn.execute(sa.insert(orders).values(utx=created.entity_id))  # the app's own table
    assert pg.count("cashouts") == (1 if mode.writes_legacy else 0)
    with pg.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM app_own.orders").scalar_one() == 1


def test_a_session_with_several_binds_is_told_which_connection_to_pass(db: Database) -> None:
    """A Session bound per model has no connection of its own: the caller is told how
    to pass the one of the adapter's database (SQLAlchemy's UnboundExecutionError
    leaked), and that connection works inside the Session's transaction."""
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    entity_id = str(created.entity_id)
    with Session(binds={Cashout: db.engine}) as session:
        with pytest.raises(InputError, match=r"bind_arguments=\{'mapper'"):
            a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=session)
        assert unified_status(db, entity_id) == "PENDING"
        conn = session.connection(bind_arguments={"mapper": Cashout})
        r = a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
        assert r.overall_success, r.error
        session.rollback()
    assert unified_status(db, entity_id) == "PENDING"  # it was the Session's transaction


def test_a_session_not_begun_with_autobegin_off_is_refused(db: Database) -> None:
    """``Session(autobegin=False)`` the caller forgot to begin: refused like a Connection
    not in a transaction, for writes and reads (SQLAlchemy's InvalidRequestError
    "Autobegin is disabled" leaked); once begun, the adapter writes in its transaction."""
    a, entity_id, events = watched(db)
    with Session(db.engine, autobegin=False) as session:
        each_refused(a, entity_id, session, "must be in a transaction")
        assert events == []
        with session.begin():
            r = a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=session)
            assert r.overall_success, r.error
        with pytest.raises(InputError, match="must be in a transaction"):  # ended: none again
            a.update_status(entity_id, "AWAITING_RESPONSE", "r", "svc", connection=session)
    assert unified_status(db, entity_id) == "PROCESSING"
    assert db.count("cashouts") == 1


def test_sqlite_a_refused_legacy_primary_leaves_nothing_for_a_caller_that_commits(
    sqlite_db: Database,
) -> None:
    """SQLite keeps a transaction usable after a refused statement. In
    DUAL_WRITE_LEGACY_PRIMARY the unified side was written first (for PostgreSQL's
    capture of nested statements, which SQLite has not): a caller that committed after
    the CallerTransactionError anyway kept unified FAILED over a legacy row that refused
    it (review of the merge of fix-nested). The primary side comes first on SQLite."""
    from support.refusing import refuse

    a = adapter_in(sqlite_db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    with refuse(sqlite_db, "cashouts", "FAILED"), sqlite_db.engine.connect() as conn:
        conn.begin()
        with pytest.raises(CallerTransactionError):
            a.update_status(created.entity_id, "FAILED", "no", "svc", connection=conn)
        conn.commit()
    with sqlite_db.engine.connect() as conn:
        legacy = conn.exec_driver_sql("SELECT status FROM cashouts").scalar_one()
        unified = conn.exec_driver_sql("SELECT status FROM unified_transactions").scalar_one()
    assert (legacy, unified) == ("PENDING", "PENDING")


def test_another_writer_past_the_busy_timeout_is_said_as_such(sqlite_db: Database) -> None:
    """Another process held SQLite's write lock past the application's engine's busy
    timeout: the caller's write failed "begin it with BEGIN IMMEDIATE", advice that does
    not help (BEGIN IMMEDIATE waits for the same lock, as long), where the cause is the
    other writer and the cure a longer timeout (exploratory SQLite deployment)."""
    a, entity_id, _events = watched(sqlite_db)
    path = sqlite_db.url.removeprefix("sqlite:///")
    import sqlite3

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    app = sa.create_engine(sqlite_db.url, connect_args={"timeout": 0.2})
    try:
        with app.begin() as conn, pytest.raises(CallerTransactionError) as failed:
            a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        app.dispose()
    said = str(failed.value)
    assert "busy timeout" in said and "BEGIN IMMEDIATE" not in said, said


@pytest.mark.parametrize("operation", ["update_status", "create_transaction"])
def test_an_invalidated_connection_is_the_callers_error(db: Database, operation: str) -> None:
    """A connection invalidated before the call (the caller's invalidate(), or a lost
    connection its own statement found): SQLAlchemy's PendingRollbackError left the
    adapter raw (a probe), observed as an interruption. Now CallerTransactionError,
    refused (the caller's transaction failed before the call), nothing written."""
    a, entity_id, events = watched(db)
    events.clear()
    before = db.count("unified_transactions")
    with db.engine.connect() as conn:
        conn.begin()
        conn.invalidate()
        with pytest.raises(CallerTransactionError, match="invalidated"):
            if operation == "update_status":
                a.update_status(entity_id, "PROCESSING", "r", "svc", connection=conn)
            else:
                a.create_transaction("ESCROW", 1, "5", "USD", connection=conn)
        conn.rollback()
    assert [(e.success, e.refused) for e in events] == [(True, True)]
    assert db.count("unified_transactions") == before
    assert unified_status(db, entity_id) == "PENDING"


@pytest.fixture
def another_installation(pg: Database) -> Iterator[sa.Engine]:
    """A second database on the same server with unistatus installed (its own rows)."""
    from conftest import _drop_database, _throwaway_database  # noqa: PLC0415
    from unistatus.config import load_settings  # noqa: PLC0415
    from unistatus.db import schema  # noqa: PLC0415

    admin, url, name = _throwaway_database("_other")
    engine = create_engine(url)
    try:
        schema.upgrade(engine, load_settings(database_url=url))
        yield engine
    finally:
        engine.dispose()
        _drop_database(admin, name)


def test_a_connection_to_another_database_is_refused(
    pg: Database, another_installation: sa.Engine
) -> None:
    """connection= of another database holding an installation of its own: the adapter
    wrote there, under that database's mode, a status change to the other database's
    row of the same legacy id, and said success (a probe). Refused, nothing written."""
    a, entity_id, events = watched(pg)
    events.clear()
    other = DualWriteAdapter(another_installation, settings=pg.settings, record_stats=False)
    twin = other.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id
    assert twin == entity_id  # the same legacy id: the same derived id
    with another_installation.connect() as conn:
        conn.begin()
        each_refused(a, entity_id, conn, "another database")
        conn.commit()
    assert [(e.operation, e.refused) for e in events] == [
        ("update_status", True),
        ("create_transaction", True),
    ]
    with another_installation.connect() as conn:
        statuses = conn.exec_driver_sql("SELECT status FROM cashouts").scalars().all()
        assert (
            statuses == ["PENDING"]
            and conn.exec_driver_sql("SELECT count(*) FROM escrows").scalar_one() == 0
        )
    other.close()


def test_a_deadlock_in_the_callers_transaction_says_it_may_be_retried(pg: Database) -> None:
    """Two callers' transactions change two transactions in opposite orders: the loser's
    CallerTransactionError said only "deadlock detected" in its text, nothing a caller
    could branch on, and its failure carried no error kind (a probe). Now ``retryable``
    and the SQLSTATE, and the kind "database"."""
    a, first, events = watched(pg)
    second = str(a.create_transaction("WALLET_CASHOUT", 2, "5", "USD").entity_id)
    events.clear()
    both = threading.Barrier(2, timeout=10)
    failures: list[CallerTransactionError] = []

    def change(one: str, other: str) -> None:
        with pg.engine.connect() as conn:
            conn.begin()
            try:
                a.update_status(one, "PROCESSING", "r", "svc", connection=conn)
                both.wait()
                a.update_status(other, "PROCESSING", "r", "svc", connection=conn)
                conn.commit()
            except CallerTransactionError as exc:
                failures.append(exc)
                conn.rollback()

    threads = [
        threading.Thread(target=change, args=pair) for pair in ((first, second), (second, first))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    (lost,) = failures
    assert lost.retryable and lost.sqlstate == "40P01", lost
    assert "run the transaction again" in str(lost)
    failed = [e for e in events if not e.success and not e.rolled_back]
    assert [e.error_kind for e in failed] == ["database"], failed
