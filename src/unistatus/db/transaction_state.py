"""What the driver knows of a connection's transaction that SQLAlchemy does not say.

SQLAlchemy's ``in_transaction()`` is its own bookkeeping: on a connection in AUTOCOMMIT
``begin()`` sends nothing, and after a failed statement PostgreSQL keeps the transaction
open but aborted (its COMMIT is answered with ROLLBACK, no error). The adapter writes in
a caller's transaction only when it is a real one that can still commit.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

__all__ = ["autocommits", "transaction_failed"]

# libpq's PQTRANS_INERROR: in a transaction that a failed statement aborted.
_PQTRANS_INERROR = 3


def _driver_connection(conn: sa.Connection) -> Any:
    try:
        return conn.connection.dbapi_connection
    except sa.exc.SQLAlchemyError:  # closed or invalidated: nothing to tell
        return None


def autocommits(conn: sa.Connection) -> bool:
    """Whether each statement on ``conn`` commits on its own (the driver's autocommit,
    as ``isolation_level="AUTOCOMMIT"`` sets it): a transaction begun there is not one."""
    return getattr(_driver_connection(conn), "autocommit", False) is True


def transaction_failed(conn: sa.Connection) -> bool:
    """Whether the database has aborted ``conn``'s transaction (PostgreSQL: a statement
    in it failed): it can only be rolled back, and its COMMIT is a ROLLBACK."""
    info = getattr(_driver_connection(conn), "info", None)
    status = getattr(info, "transaction_status", None)
    # libpq's number, as psycopg 3 (an IntEnum) and psycopg2 (an int) both report it.
    return status is not None and int(status) == _PQTRANS_INERROR
