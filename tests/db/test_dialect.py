"""The backend differences of db/dialect.py, against real SQLite and PostgreSQL.

The retry rule is judged on errors the databases really raise: a busy SQLite file, and
on PostgreSQL a lock timeout, a deadlock, a serialization failure and a statement
timeout, provoked with two connections. It accepts everything the three rules it
replaced accepted (the adapter's and the repair's message texts, the backfill's
SQLSTATEs), except a message that only quotes the words (a unique violation whose key
is "deadlock"): on PostgreSQL the SQLSTATE decides.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import PG_IN_EVERY_LAYOUT, Database
from support.engines import REPEATABLE_READ_OPTIONS, at_repeatable_read
from unistatus.db.dialect import is_in_memory, ops_for
from unistatus.db.engine import create_engine
from unistatus.db.mode_lock_keys import MODE_LOCK_KEY, SUMMARY_LOCK, system_lock_key
from unistatus.db.retry import RETRY_SQLSTATES, is_retryable, retry_reason
from unistatus.db.tables import migration_control
from unistatus.domain.statuses import LegacySystemType

# --- the rules is_retryable replaced, verbatim, to prove it accepts what they did -------


def _old_adapter(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(
        s in text for s in ("deadlock", "could not serialize", "database is locked", "lock timeout")
    )


def _old_repair(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    return _old_adapter_text(text)


def _old_adapter_text(text: str) -> bool:
    text = text.lower()
    return any(
        s in text for s in ("deadlock", "could not serialize", "database is locked", "lock timeout")
    )


_OLD_SQLSTATES = {
    "57014": "statement timeout",
    "55P03": "lock timeout",
    "40P01": "deadlock",
    "40001": "serialization failure",
}


def _old_backfill(exc: sa.exc.DBAPIError) -> str | None:
    if exc.connection_invalidated:
        return None
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _OLD_SQLSTATES:
        return _OLD_SQLSTATES[sqlstate]
    if "database is locked" in str(exc.orig).lower():
        return "database is locked"
    return None


def _accepted_before(exc: sa.exc.DBAPIError) -> bool:
    return _old_adapter(exc) or _old_repair(exc) or _old_backfill(exc) is not None


def _raised(call: Callable[[], object]) -> sa.exc.DBAPIError:
    with pytest.raises(sa.exc.DBAPIError) as info:
        call()
    return info.value


# --- SQLite -------------------------------------------------------------------------------


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'busy.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    yield engine
    engine.dispose()


def test_a_busy_sqlite_database_is_retryable(sqlite_file: sa.Engine) -> None:
    ops = ops_for(sqlite_file)
    with ops.write_transaction() as holder:
        holder.exec_driver_sql("INSERT INTO t (id) VALUES (1)")
        with sqlite_file.connect() as other:
            other.exec_driver_sql("PRAGMA busy_timeout = 0")  # fail at once, not in 30 s
            other.commit()
            other = other.execution_options(sqlite_begin="IMMEDIATE")
            exc = _raised(other.begin)
    assert "database is locked" in str(exc.orig)
    assert isinstance(exc.orig, sqlite3.OperationalError)
    assert is_retryable(exc) and retry_reason(exc) == "database is locked"
    assert is_retryable(exc.orig)  # the driver's own error too
    assert _accepted_before(exc)


def test_a_busy_sqlite_database_is_retryable_by_its_error_code() -> None:
    busy = sqlite3.OperationalError("some future wording")
    busy.sqlite_errorname = "SQLITE_BUSY_SNAPSHOT"  # type: ignore[attr-defined]
    assert retry_reason(busy) == "database is locked"


def test_other_sqlite_errors_are_not_retryable(sqlite_file: sa.Engine) -> None:
    with sqlite_file.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t (id) VALUES (1)")
        duplicate = _raised(lambda: conn.exec_driver_sql("INSERT INTO t (id) VALUES (1)"))
    with sqlite_file.connect() as conn:
        missing = _raised(lambda: conn.exec_driver_sql("SELECT * FROM no_such_table"))
    for exc in (duplicate, missing):
        assert not is_retryable(exc) and retry_reason(exc) is None, exc
        assert not _accepted_before(exc)


# --- PostgreSQL ---------------------------------------------------------------------------


@contextmanager
def _session(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def test_a_postgres_lock_timeout_is_retryable(pg: Database) -> None:
    ops = ops_for(pg.engine)
    with _session(pg.engine) as switch:
        ops.mode_exclusive_lock(switch)  # a mode switch holds the lock
        with _session(pg.engine) as writer:
            writer.exec_driver_sql("SET LOCAL lock_timeout = 50")
            exc = _raised(lambda: ops.mode_shared_lock(writer))
    assert getattr(exc.orig, "sqlstate", None) == "55P03"
    assert retry_reason(exc) == "lock timeout"
    assert _accepted_before(exc)


def test_a_postgres_lock_not_available_is_retryable(pg: Database) -> None:
    lock = f"LOCK TABLE {migration_control.name} IN EXCLUSIVE MODE"
    with _session(pg.engine) as holder, _session(pg.engine) as other:
        holder.exec_driver_sql(lock)
        exc = _raised(lambda: other.exec_driver_sql(lock + " NOWAIT"))
    # 55P03 without the words "lock timeout": the old message rules missed it.
    assert getattr(exc.orig, "sqlstate", None) == "55P03"
    assert retry_reason(exc) == "lock timeout"
    assert _old_backfill(exc) is not None


def test_a_postgres_deadlock_is_retryable(pg: Database) -> None:
    errors: list[sa.exc.DBAPIError] = []
    both_hold = threading.Barrier(2)

    def lock(first: int, second: int) -> None:
        try:
            with _session(pg.engine) as conn:
                conn.exec_driver_sql("SET LOCAL deadlock_timeout = '50ms'")
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(first)))
                both_hold.wait(timeout=10)
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(second)))
        except sa.exc.DBAPIError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=lock, args=keys) for keys in ((101, 102), (102, 101))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(errors) == 1, errors  # one of the two is chosen as the victim
    [exc] = errors
    assert getattr(exc.orig, "sqlstate", None) == "40P01"
    assert retry_reason(exc) == "deadlock"
    assert _accepted_before(exc)


def _control_row(conn: sa.Connection, key: str) -> None:
    conn.execute(
        sa.insert(migration_control).values(
            key=key, value="0", updated_at=datetime.now(UTC), updated_by="test"
        )
    )


def test_a_postgres_serialization_failure_is_retryable(pg: Database) -> None:
    with pg.engine.begin() as conn:
        _control_row(conn, "probe")
    bump = sa.update(migration_control).where(migration_control.c.key == "probe")
    with pg.engine.connect() as first:
        first = first.execution_options(isolation_level="REPEATABLE READ")
        with first.begin():
            first.execute(sa.select(migration_control))  # the snapshot is taken
            with pg.engine.begin() as second:
                second.execute(bump.values(value="1"))
            exc = _raised(lambda: first.execute(bump.values(value="2")))
    assert getattr(exc.orig, "sqlstate", None) == "40001"
    assert retry_reason(exc) == "serialization failure"
    assert _accepted_before(exc)


def test_a_postgres_statement_timeout_is_retryable(pg: Database) -> None:
    with _session(pg.engine) as conn:
        ops_for(pg.engine).bound_statements(conn, 50, 50)
        exc = _raised(lambda: conn.execute(sa.select(sa.func.pg_sleep(2))))
    assert getattr(exc.orig, "sqlstate", None) == "57014"
    assert retry_reason(exc) == "statement timeout"
    assert _accepted_before(exc)


def test_postgres_errors_are_judged_by_sqlstate_not_by_their_words(pg: Database) -> None:
    with pg.engine.begin() as conn:
        _control_row(conn, "deadlock")
    with _session(pg.engine) as conn:
        exc = _raised(lambda: _control_row(conn, "deadlock"))
    assert getattr(exc.orig, "sqlstate", None) == "23505"
    assert "deadlock" in str(exc.orig)  # the key, quoted in the message's detail
    assert not is_retryable(exc)
    assert _old_adapter(exc)  # the one case the old message rule got wrong


def test_a_lost_postgres_connection_is_not_retryable(pg: Database) -> None:
    with pg.engine.connect() as victim, pg.engine.connect() as killer:
        pid = victim.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        killer.execute(sa.select(sa.func.pg_terminate_backend(pid)))
        killer.commit()
        exc = _raised(lambda: victim.exec_driver_sql("SELECT 1"))
    assert exc.connection_invalidated
    assert not is_retryable(exc)
    assert not _accepted_before(exc)


def test_every_retry_reason_is_a_known_one() -> None:
    assert set(RETRY_SQLSTATES) == set(_OLD_SQLSTATES)
    assert set(RETRY_SQLSTATES.values()) == set(_OLD_SQLSTATES.values())


# --- the mode lock, the catalog probe, URLs --------------------------------------------------

_SHARED_MODE_LOCKS = sa.text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock' "
    "AND granted AND pid = pg_backend_pid() AND objid = :key"
)


def test_the_mode_lock_is_taken_shared_until_the_transaction_ends(db: Database) -> None:
    ops = ops_for(db.engine)
    for _ in range(2):  # the compiled statement is reused
        with ops.write_transaction() as conn:
            ops.mode_shared_lock(conn)
            if db.backend == "postgres":
                assert conn.execute(_SHARED_MODE_LOCKS, {"key": MODE_LOCK_KEY}).scalar() == 1
    if db.backend == "postgres":
        with db.engine.connect() as conn:
            assert conn.execute(_SHARED_MODE_LOCKS, {"key": MODE_LOCK_KEY}).scalar() == 0


@pytest.mark.parametrize("system", [None, *LegacySystemType], ids=str)
def test_the_mode_lock_has_one_spelling(db: Database, system: LegacySystemType | None) -> None:
    """The installation's lock first, then the system's (None: every system's)."""
    ops = ops_for(db.engine)
    statement, clause = ops.mode_shared_lock_statement(system), ops.mode_lock_clause(system)
    if db.backend == "sqlite":
        assert statement is None and clause is None
        return
    assert statement is not None and clause is not None
    keys = ops.mode_lock_keys(system)
    assert keys[0] == MODE_LOCK_KEY and len(keys) == (4 if system is None else 2)
    calls = [f"pg_advisory_xact_lock_shared({k})" for k in keys]
    for element in (statement, clause):
        sql = str(element.compile(db.engine, compile_kwargs={"literal_binds": True}))
        assert sql.count("pg_advisory_xact_lock_shared(") == len(keys), sql
        assert [sql.index(c) for c in calls] == sorted(sql.index(c) for c in calls), sql


@PG_IN_EVERY_LAYOUT
def test_the_summary_lock_is_its_own_and_held_until_the_transaction_ends(pg: Database) -> None:
    """Exclusive, on a key of the installation's that no writer or switch takes."""
    ops = ops_for(pg.engine)
    key = system_lock_key(ops.mode_lock_key, SUMMARY_LOCK)
    assert key not in ops.mode_lock_keys(None)
    try_lock = sa.select(sa.func.pg_try_advisory_xact_lock(key))
    with ops.write_transaction() as conn:
        ops.summary_lock(conn)
        with pg.engine.connect() as other:
            assert other.execute(try_lock).scalar() is False
            other.rollback()
    with pg.engine.connect() as other:
        assert other.execute(try_lock).scalar() is True


def test_the_locked_mode_function_probe(db: Database) -> None:
    with db.engine.connect() as conn:
        found = ops_for(db.engine).has_locked_mode_function(conn)
    assert found is (db.backend == "postgres")


@pytest.mark.parametrize(
    ("url", "memory"),
    [
        ("sqlite://", True),
        ("sqlite:///:memory:", True),
        ("sqlite+pysqlite:///:memory:", True),
        ("sqlite:///unistatus.db", False),
        ("sqlite:////tmp/x.db", False),
        ("postgresql+psycopg://postgres@127.0.0.1/unistatus", False),
    ],
)
def test_an_in_memory_database_is_recognised(url: str, memory: bool) -> None:
    assert is_in_memory(sa.engine.make_url(url)) is memory


def test_a_batch_transaction_is_marked_and_bounded_in_one_round_trip(db: Database) -> None:
    """A backfill batch: the writer mark, the statement and lock timeouts and (PostgreSQL)
    the asynchronous commit, before its statement; on PostgreSQL in ONE round trip (a
    batch is otherwise its one statement and its commit: every round trip counts)."""
    from unistatus.db import writer_mark

    ops = ops_for(db.engine)
    sent: list[str] = []

    def count(*args: object) -> None:
        sent.append(str(args[2]))

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        with ops.batch_transaction(1234, 567) as conn:
            before = list(sent)
            if db.backend == "postgres":
                got = conn.execute(
                    sa.select(
                        sa.func.current_setting("statement_timeout"),
                        sa.func.current_setting("lock_timeout"),
                        sa.func.current_setting("synchronous_commit"),
                        writer_mark.current_mark(),
                    )
                ).one()
                assert tuple(got) == ("1234ms", "567ms", "off", writer_mark.MARK)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    if db.backend == "postgres":
        assert len(before) == 1, before
        with db.engine.connect() as conn:  # SET LOCAL: gone with the transaction
            assert conn.execute(sa.text("SHOW synchronous_commit")).scalar() == "on"


@pytest.mark.postgres
@pytest.mark.parametrize(
    "made",
    [
        "server default",
        "server default repeatable read",
        "engine repeatable read",
        "autocommit",
        "application's engine, server default repeatable read",
        "application's engine, repeatable read",
    ],
)
def test_the_packages_write_transactions_are_read_committed_whatever_the_engine(
    pg: Database, made: str
) -> None:
    """Each kind of engine an application may hand the library: the package's write
    transactions (mode switches, replays, retirement) wait for locks and must see what
    committed meanwhile, so they are READ COMMITTED transactions on every one."""
    options = REPEATABLE_READ_OPTIONS
    engine = {
        "server default": lambda: create_engine(pg.url),
        "server default repeatable read": lambda: create_engine(
            pg.url, connect_args={"options": options}
        ),
        "engine repeatable read": lambda: create_engine(pg.url, isolation_level="REPEATABLE READ"),
        "autocommit": lambda: create_engine(pg.url).execution_options(isolation_level="AUTOCOMMIT"),
        # An application's engine handed to the library: unistatus sets nothing on its
        # connections, and asks for the level on each of its write transactions.
        "application's engine, server default repeatable read": lambda: at_repeatable_read(pg.url),
        "application's engine, repeatable read": lambda: sa.create_engine(
            pg.url, isolation_level="REPEATABLE READ"
        ),
    }[made]()
    try:
        for _ in range(2):  # and again on the connection the pool gives back
            with ops_for(engine).write_transaction() as conn:
                level = conn.exec_driver_sql("SHOW transaction_isolation").scalar_one()
                in_transaction = conn.exec_driver_sql(
                    "SELECT now() = statement_timestamp()"
                ).scalar_one()
            assert (level, in_transaction) == ("read committed", False)
        if made.startswith("application's"):  # its own transactions left as it made them
            with engine.connect() as conn:
                own = conn.exec_driver_sql("SHOW transaction_isolation").scalar_one()
            assert own == "repeatable read"
    finally:
        engine.dispose()
