"""The isolation level of the package's own write transactions (PostgreSQL).

READ COMMITTED whatever the engine's or the server's default: a transaction that waits
for a lock (the mode lock, a retirement's table locks) must then see what the
transactions it waited for committed. Under REPEATABLE READ its snapshot is its first
statement's: a replay found no pending change that a writer committed meanwhile, a
retirement's gates no legacy write, and dropped the column with it; on an engine in
AUTOCOMMIT there was no transaction at all. Asked for only where the connection does not
say so itself (psycopg sends it with the BEGIN, but SQLAlchemy's setting and resetting
cost a create 10% of its time).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

__all__ = [
    "DEFAULT_LEVEL_KEY",
    "name_read_committed",
    "read_committed",
    "read_committed_by_default",
]

log = logging.getLogger("unistatus.db.isolation")

# Where a driver connection's info (conn.info) keeps its server default level.
DEFAULT_LEVEL_KEY = "unistatus.default_transaction_isolation"
_warned: set[str] = set()  # the levels said once per process


def read_committed(conn: sa.Connection) -> sa.Connection:
    """``conn``, its next transaction READ COMMITTED (asked of SQLAlchemy, which puts the
    level back when the connection returns to the pool, unless the connection says so
    already: :func:`_read_committed_already`)."""
    if _read_committed_already(conn):
        return conn
    return conn.execution_options(isolation_level="READ COMMITTED")


def _read_committed_already(conn: sa.Connection) -> bool:
    """Whether ``conn``'s next transaction is READ COMMITTED by the connection's own
    word: psycopg 3 sends the level its ``isolation_level`` names with the BEGIN, and the
    engines unistatus makes name READ COMMITTED on every new connection
    (:mod:`unistatus.db.connection_setup`). Not the server's default as SQLAlchemy read
    it at the engine's first connection: an ``ALTER DATABASE ... SET
    default_transaction_isolation`` since, or an application's own connect listener,
    would make that stale. Any other connection (an application's engine, another
    driver, a level set through SQLAlchemy) is asked explicitly."""
    if conn.dialect.driver != "psycopg" or "isolation_level" in conn.get_execution_options():
        return False
    from psycopg import IsolationLevel

    raw = conn.connection.dbapi_connection
    return getattr(raw, "isolation_level", None) == IsolationLevel.READ_COMMITTED


def name_read_committed(dbapi_conn: object) -> None:
    """A new psycopg 3 connection of unistatus's own engine: READ COMMITTED named on it
    (sent with each BEGIN, no round trip), whatever the server's default."""
    from psycopg import IsolationLevel

    dbapi_conn.isolation_level = IsolationLevel.READ_COMMITTED  # type: ignore[attr-defined]


def read_committed_by_default(conn: sa.Connection) -> bool:
    """Whether a statement run on ``conn`` in autocommit is a READ COMMITTED transaction:
    the server's ``default_transaction_isolation`` for this connection (ALTER DATABASE,
    ALTER ROLE, the connection's options), as the connection's set-up read it
    (:mod:`unistatus.db.connection_setup`), else asked once per driver connection. Under
    another level a one-statement transaction's snapshot is its start's: a lock waited
    for inside it (the mode lock of a guarded write) shows nothing committed meanwhile."""
    level = conn.info.get(DEFAULT_LEVEL_KEY)
    if level is None:
        level = conn.info[DEFAULT_LEVEL_KEY] = str(
            conn.exec_driver_sql("SHOW default_transaction_isolation").scalar()
        )
    if level == "read committed":
        return True
    if level not in _warned:
        _warned.add(level)
        log.warning(
            "the server's default_transaction_isolation is %r: status changes take the "
            "locked path (READ COMMITTED), not the one-statement one",
            level,
        )
    return False
