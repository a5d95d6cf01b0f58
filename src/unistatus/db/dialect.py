"""What differs between SQLite and PostgreSQL, in one class per dialect: the one for an
engine (:func:`ops_for`), and what a database URL can do (:func:`is_in_memory`).

Everything else in unistatus is written once against SQLAlchemy Core and asks the ops
object for the few things that really differ: how a write transaction begins, how a
write excludes a concurrent mode switch (:meth:`DialectOps.mode_shared_lock`), how a
conflicting insert is skipped, how long-running statements are bounded, whether a
catalog object exists, and what the server can say about its own health (replication
lag, sessions waiting for a lock). The operations and their generic behaviour:
:mod:`unistatus.db.dialect_base`; each backend's: :mod:`unistatus.db.dialect_sqlite`,
:mod:`unistatus.db.dialect_postgres`. Which errors are worth retrying:
:mod:`unistatus.db.retry`; the mode locks' keys: :mod:`unistatus.db.mode_lock_keys`.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.dialect_base import DialectOps
from unistatus.db.dialect_postgres import PostgresOps
from unistatus.db.dialect_sqlite import SQLiteOps

__all__ = ["BIG_INTEGER", "DialectOps", "PostgresOps", "SQLiteOps", "is_in_memory", "ops_for"]

# A 64-bit integer column: BIGINT, but INTEGER on SQLite (the same storage there, and
# only an INTEGER PRIMARY KEY numbers new rows itself).
BIG_INTEGER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def is_in_memory(url: sa.URL) -> bool:
    """Whether ``url`` names a database that lives in one process's memory (SQLite's
    ``:memory:``): no other process can reach it."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def ops_for(engine: sa.Engine) -> DialectOps:
    """The operations of ``engine``'s backend (the generic ones for another backend)."""
    name = engine.dialect.name
    if name == "postgresql":
        return PostgresOps(engine)
    if name == "sqlite":
        return SQLiteOps(engine)
    return DialectOps(engine)
