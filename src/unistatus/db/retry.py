"""Which database errors are worth running the transaction again for, and why.

A lost race for a lock or a snapshot, or a wait that ran out of time: PostgreSQL names
them by SQLSTATE, SQLite by its busy code; the reason is what the backfill shows while
it retries. A lost connection is not retryable here: whether its transaction committed
is unknown (the adapter handles that case itself).
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "RETRY_SQLSTATES",
    "fails_every_write",
    "is_read_only",
    "is_retryable",
    "refused_by_application",
    "retry_reason",
    "sqlstate_of",
]

# Errors worth running the transaction again for: it lost a race for a lock or a
# snapshot, or ran out of time waiting. PostgreSQL names them by SQLSTATE; the value is
# the reason the backfill shows while it retries.
RETRY_SQLSTATES = {
    "40001": "serialization failure",
    "40P01": "deadlock",
    "55P03": "lock timeout",
    "57014": "statement timeout",
}
# Without a SQLSTATE: SQLite's busy code (named on Python 3.11+), else the message
# (first match wins; SQLite says "database is locked" for a busy database).
_RETRY_SQLITE_CODE = "SQLITE_BUSY"
_RETRY_TEXTS = (
    ("database is locked", "database is locked"),
    ("deadlock", "deadlock"),
    ("could not serialize", "serialization failure"),
    ("lock timeout", "lock timeout"),
)


def retry_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth retrying (e.g. ``"deadlock"``), or None if it is not.

    ``exc`` is a SQLAlchemy ``DBAPIError`` or the driver's own error. PostgreSQL's
    errors are judged by SQLSTATE (:data:`RETRY_SQLSTATES`: serialization failure,
    deadlock, lock not available or lock timeout, statement timeout or cancel), never
    by message text. SQLite's busy database (``SQLITE_BUSY``, "database is locked") and,
    for any driver without SQLSTATEs, a message naming a deadlock, a serialization
    failure or a lock timeout are retryable too. A lost connection is not: whether its
    transaction committed is unknown (the adapter handles that case itself).
    """
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return None
    orig, sqlstate, sqlite_name = _codes(exc)
    if orig is None:
        return None
    if sqlstate is not None:
        return RETRY_SQLSTATES.get(sqlstate)
    if sqlite_name.startswith(_RETRY_SQLITE_CODE):
        return "database is locked"
    text = str(orig).lower()
    return next((reason for match, reason in _RETRY_TEXTS if match in text), None)


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying in a fresh transaction (:func:`retry_reason`)."""
    return retry_reason(exc) is not None


# SQLSTATEs (or their class, two characters) that every write would meet again: a
# read-only transaction or database, no privilege, out of resources, the server
# shutting down, the connection gone, a system error.
_EVERY_WRITE_SQLSTATES = ("25006", "42501", "53", "57P", "08", "58")
# SQLite's codes for the same: read-only, no permission, full, I/O error, cannot open.
_EVERY_WRITE_SQLITE = ("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_FULL", "SQLITE_IOERR")


def fails_every_write(exc: BaseException) -> bool:
    """Whether ``exc`` (a SQLAlchemy ``DBAPIError`` or the driver's error) is the
    database refusing writes as such, not this row: a lost connection, a read-only
    database, no privilege, a full disk, a shutdown (:data:`_EVERY_WRITE_SQLSTATES`)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    _, sqlstate, sqlite_name = _codes(exc)
    if sqlstate is not None:
        return sqlstate.startswith(_EVERY_WRITE_SQLSTATES)
    return sqlite_name.startswith(_EVERY_WRITE_SQLITE)


def is_read_only(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a write because it is read-only (a
    replica, ``default_transaction_read_only``, a SQLite file opened read-only)."""
    _, sqlstate, sqlite_name = _codes(exc)
    return sqlstate == "25006" or sqlite_name.startswith("SQLITE_READONLY")


def refused_by_application(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a write for a rule of the application's
    own, not failing: an integrity constraint of a table unistatus does not own
    (SQLSTATE class 23: CHECK, NOT NULL, unique, foreign key, exclusion), or a trigger
    raising an exception (P0001; SQLite: ``RAISE(ABORT, ...)``). A violation on one of
    unistatus's own tables is unistatus's failure, never the caller's; so is a data
    exception (class 22), which names no table: a caller's value of a type Python cannot
    judge is judged by the database before the write (:mod:`unistatus.db.legacy_cast`)."""
    from unistatus.db.catalog import metadata  # the tables, once they are all defined

    tables = metadata.tables.values()
    own = {table.name for table in tables}
    orig, sqlstate, sqlite_name = _codes(exc)
    if sqlstate is not None:
        if sqlstate == "P0001":
            return True
        # No table named: a domain's CHECK, or a trigger raising a constraint's SQLSTATE
        # (unistatus defines neither).
        table = getattr(getattr(orig, "diag", None), "table_name", None)
        return sqlstate.startswith("23") and table not in own
    if not sqlite_name.startswith("SQLITE_CONSTRAINT"):
        return False
    if sqlite_name == "SQLITE_CONSTRAINT_TRIGGER":
        return True
    # "UNIQUE constraint failed: unified_transactions.id, ...", "CHECK constraint failed:
    # ck_origin": unistatus's own when a name it defines is named (whole names only).
    named = {part.strip().split(".")[0] for part in str(orig).rsplit(":", 1)[-1].split(",")}
    own |= {str(c.name) for t in tables for c in t.constraints if c.name}
    return not named & own


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (PostgreSQL's, from psycopg 3 or psycopg2), or None."""
    return _codes(exc)[1]


def _codes(exc: BaseException) -> tuple[BaseException | None, str | None, str]:
    """The driver's error under SQLAlchemy's wrapper, its SQLSTATE (PostgreSQL) and its
    SQLite error name ("" when it has none)."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    # psycopg 3 says sqlstate, psycopg2 (a caller's connection may be one) pgcode.
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    name = getattr(orig, "sqlite_errorname", "")
    return orig, sqlstate if isinstance(sqlstate, str) else None, str(name or "")
