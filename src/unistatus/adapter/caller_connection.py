"""What a caller hands the adapter as ``connection=``: the connection to write on,
or an InputError saying what it is and what to pass instead (docs/adapter.md, "Inside
the caller's transaction")."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.orm import Session, scoped_session

from unistatus.adapter.caller_session import session_connection
from unistatus.db.legacy import LegacyTable
from unistatus.db.transaction_state import autocommits, savepoint_may_commit
from unistatus.errors import InputError

__all__ = ["CallerConnection", "caller_connection", "current_session", "results_not_streamed"]

# What an argument ``connection=`` may be (a scoped_session: its current Session).
CallerConnection = sa.Connection | Session | scoped_session[Session]
_NOT_IN_TRANSACTION = (
    "connection= must be in a transaction ({begin}): the adapter never begins or "
    "commits the caller's transaction"
)


def caller_connection(
    target: object, dialect: str, legacy: Iterable[LegacyTable] = ()
) -> sa.Connection:
    """The connection to write on: the Connection itself (it must be in a transaction),
    or the Session's current one (a ``scoped_session``'s current Session; begun if need
    be and it may autobegin, its pending rows flushed first: those of the ``legacy``
    tables at least, :func:`~unistatus.adapter.caller_session.session_connection`, whose
    SessionUnusable says why it gave none). InputError for anything else, and for a
    connection in AUTOCOMMIT, whose "transaction" would commit each of the adapter's
    statements on its own and hold no mode lock."""
    target = current_session(target)
    if isinstance(target, Session):
        if not target.autobegin and not target.in_transaction():
            # Its connection() cannot begin one (SQLAlchemy's InvalidRequestError).
            raise InputError(_NOT_IN_TRANSACTION.format(begin="`with session.begin():`"))
        try:
            conn = session_connection(target, legacy)
        except sa.exc.UnboundExecutionError:
            raise InputError(
                "connection= is a Session bound per model, with no connection of its own: "
                "pass the Connection it holds for the adapter's database, e.g. "
                "connection=session.connection(bind_arguments={'mapper': Cashout}) "
                "(Cashout: a model of yours bound to that database)"
            ) from None
    elif isinstance(target, sa.Connection):
        if not target.in_transaction():
            # The sync Connection of an AsyncConnection (run_sync): begun the async way.
            begin = "async with conn.begin():" if target.dialect.is_async else "with conn.begin():"
            raise InputError(_NOT_IN_TRANSACTION.format(begin=f"`{begin}`"))
        conn = target
    elif _is_asyncio(target):
        name = "session" if "Session" in type(target).__name__ else "conn"
        raise InputError(
            f"connection= is an asyncio {type(target).__name__}; the adapter is "
            "synchronous: call it through SQLAlchemy's run_sync, which hands it the "
            f"synchronous one underneath, e.g. await {name}.run_sync(lambda c: "
            "adapter.update_status(..., connection=c))"
        )
    else:
        raise InputError(
            f"connection= must be a SQLAlchemy Connection or ORM Session, got {target!r}"
        )
    if conn.dialect.name != dialect:
        raise InputError(
            f"connection= is a {conn.dialect.name} connection; this adapter writes to {dialect}"
        )
    if autocommits(conn):
        raise InputError(
            "connection= is in AUTOCOMMIT: each statement would commit on its own, so the "
            "caller's transaction could neither keep the write together with its own nor "
            "be waited for by a mode switch; use a connection without "
            "isolation_level='AUTOCOMMIT'"
        )
    if savepoint_may_commit(conn):
        raise InputError(
            "connection= is in a SAVEPOINT (begin_nested) of a SQLite engine whose driver "
            "handles transactions itself: pysqlite sends no BEGIN before a SAVEPOINT, so its "
            "RELEASE may commit what the caller means to roll back; give the engine "
            "SQLAlchemy's pysqlite recipe (docs/adapter.md) or use "
            "unistatus.db.engine.create_engine"
        )
    return conn


@contextmanager
def results_not_streamed(conn: sa.Connection) -> Iterator[None]:
    """``conn`` without its results streamed while the block runs (its own options
    again after): a connection a batch job streams rows on (``stream_results``,
    ``yield_per``) ran the adapter's statements in a server-side cursor, which takes no
    INSERT, so every change failed as the database's (a probe)."""
    before = conn.get_execution_options()
    if not (before.get("stream_results") or before.get("yield_per")):
        yield
        return
    kept = {k: before[k] for k in ("stream_results", "yield_per", "max_row_buffer") if k in before}
    conn.execution_options(stream_results=False, yield_per=None)
    try:
        yield
    finally:
        conn.execution_options(**kept)


def current_session(target: object) -> object:
    """A ``scoped_session`` (Flask-SQLAlchemy's ``db.session``) as the registry's
    current Session; anything else as it is."""
    return target() if isinstance(target, scoped_session) else target


def _is_asyncio(target: object) -> bool:
    """SQLAlchemy's AsyncConnection or AsyncSession (its asyncio extension is not
    imported for this: anything of it in hand means it is loaded already)."""
    return type(target).__module__.startswith("sqlalchemy.ext.asyncio")
