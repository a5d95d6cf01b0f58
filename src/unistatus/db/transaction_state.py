"""What the driver knows of a connection's transaction that SQLAlchemy does not say.

SQLAlchemy's ``in_transaction()`` is its own bookkeeping: on a connection in AUTOCOMMIT
``begin()`` sends nothing, and after a failed statement PostgreSQL keeps the transaction
open but aborted (its COMMIT is answered with ROLLBACK, no error). The adapter writes in
a caller's transaction only when it is a real one that can still commit.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa

__all__ = ["autocommits", "savepoint_may_commit", "transaction_failed"]

# sqlite3's ``autocommit`` (Python 3.12+) when the driver handles transactions itself.
_LEGACY = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)

# libpq's PQTRANS_INERROR: in a transaction that a failed statement aborted.
_PQTRANS_INERROR = 3


def _driver_connection(conn: sa.Connection) -> Any:
    try:
        return conn.connection.dbapi_connection
    except sa.exc.SQLAlchemyError:  # closed or invalidated: nothing to tell
        return None


def autocommits(conn: sa.Connection) -> bool:
    """Whether each statement on ``conn`` commits on its own (the driver's autocommit,
    as ``isolation_level="AUTOCOMMIT"`` sets it): a transaction begun there is not one.

    psycopg says so in ``autocommit``. Python's sqlite3 (before 3.12: no ``autocommit``)
    is told ``isolation_level = None`` by SQLAlchemy's AUTOCOMMIT, and then begins no
    transaction itself; only an explicit BEGIN opens one, as unistatus's engine sends
    from its ``begin`` hook on every connection: its ``in_transaction`` tells which.
    (SQLAlchemy's own execution options say AUTOCOMMIT for both.)
    """
    driver = _driver_connection(conn)
    if getattr(driver, "in_transaction", False) is True:
        return False  # a BEGIN was sent: a transaction, whatever the driver's setting
    if getattr(driver, "autocommit", False) is True:
        return True
    # sqlite3 in its own transaction handling ("" and the like) begins one itself
    # before the adapter's first write (the mode lock's UPDATE); with None it never does.
    return hasattr(driver, "in_transaction") and getattr(driver, "isolation_level", "") is None


def savepoint_may_commit(conn: sa.Connection) -> bool:
    """Whether ``conn`` is in a savepoint whose RELEASE may commit: sqlite3 in its own
    transaction handling (``isolation_level`` not None) sends no BEGIN before a
    SAVEPOINT, so the outermost savepoint may be what opened the transaction (SQLAlchemy
    documents this pysqlite behaviour as broken; its recipe, as unistatus's engine,
    sends BEGIN itself)."""
    driver = _driver_connection(conn)
    return (
        conn.in_nested_transaction()
        and hasattr(driver, "in_transaction")
        # Python 3.12+ has ``autocommit``: LEGACY_TRANSACTION_CONTROL is the old handling.
        and getattr(driver, "autocommit", _LEGACY) == _LEGACY
        and getattr(driver, "isolation_level", None) is not None
    )


def transaction_failed(conn: sa.Connection) -> bool:
    """Whether the database has aborted ``conn``'s transaction (PostgreSQL: a statement
    in it failed): it can only be rolled back, and its COMMIT is a ROLLBACK."""
    info = getattr(_driver_connection(conn), "info", None)
    status = getattr(info, "transaction_status", None)
    # libpq's number, as psycopg 3 (an IntEnum) and psycopg2 (an int) both report it.
    return status is not None and int(status) == _PQTRANS_INERROR
