"""The database's failures as :class:`~unistatus.errors.StorageError`, written once.

A public function never lets SQLAlchemy's or the driver's exception escape: its
message carries the statement and its parameters (callers' data), and callers catch
:class:`~unistatus.errors.UnistatusError`. :func:`storage_errors` wraps a block,
:func:`describe` says what failed in the driver's words, :func:`one_line` says it in
one redacted line (for notes and summaries that are shown or stored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import sqlalchemy as sa

from unistatus.errors import StorageError
from unistatus.redact import redact

__all__ = [
    "describe",
    "once_more_if_dropped",
    "one_line",
    "read_on_pool",
    "read_only_refusal",
    "refused_because",
    "storage_errors",
]

T = TypeVar("T")


def describe(exc: BaseException) -> str:
    """An error as its type and message; a statement's (a driver's error, a value its
    type refused) in the words of what refused it: SQLAlchemy's wrapper, the SQL and
    the parameters (callers' data) dropped, whatever engine ran it. The server's
    excerpt of the statement (``LINE 1: ...`` and its caret) goes too: a driver that
    writes the values into the SQL it sends (psycopg2) has them quoted there."""
    while isinstance(exc, sa.exc.StatementError):
        if exc.orig is None:  # SQLAlchemy's own: its message, without SQL or parameters
            return f"{type(exc).__name__}: {exc.args[0] if exc.args else ''}".strip()
        exc = exc.orig
    return f"{type(exc).__name__}: {_without_excerpt(str(exc))}".strip()


def _without_excerpt(message: str) -> str:
    """``message`` without the lines where PostgreSQL quotes the statement."""
    kept, lines = [], message.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("LINE ") or (
            line.strip() == "^" and n and lines[n - 1].startswith("LINE ")
        ):
            continue
        kept.append(line)
    return "\n".join(kept)


def refused_because(what: str, exc: BaseException) -> str:
    """What a refusal by the application's rule in the database says (db.retry's
    ``refused_by_application``): the rule's own words, without the row's values that
    PostgreSQL's DETAIL line lists."""
    reason = describe(exc).splitlines()[0]
    return f"{what} refused by a rule of the application's in the database: {reason}"


def read_only_refusal(exc: BaseException | None = None, *, who: str = "the command") -> str:
    """What a refusal by a read-only database (db.retry's ``is_read_only``: a replica,
    ``default_transaction_read_only``) says, written once: that, and where to point
    ``who`` instead; the driver's words after it when ``exc`` is given."""
    text = (
        "the database refuses writes (read-only: a replica, or "
        f"default_transaction_read_only): point {who} at the primary"
    )
    return text if exc is None else f"{text}; {describe(exc)}"


def one_line(exc: BaseException) -> str:
    """Any error as one redacted line: the driver's words or unistatus's own message."""
    text = describe(exc) if isinstance(exc, sa.exc.StatementError) else str(exc)
    lines = text.strip().splitlines()
    return redact(lines[0] if lines else type(exc).__name__)


@contextmanager
def storage_errors(what: str, *others: type[Exception]) -> Iterator[None]:
    """SQLAlchemy's errors (and ``others``, e.g. the driver's own) as StorageError:
    ``what`` failed, and why."""
    caught: tuple[type[Exception], ...] = (sa.exc.SQLAlchemyError, *others)
    try:
        yield
    except caught as exc:
        raise StorageError(f"{what}: {describe(exc)}") from None


def read_on_pool(
    engine: sa.Engine, what: str, read: Callable[[sa.Connection], T], *others: type[Exception]
) -> T:
    """``read(conn)`` on a connection of ``engine``'s pool; failures as StorageError.

    A server restart or failover drops every pooled connection. The first to meet a
    dead one invalidates the pool (SQLAlchemy; no pre-ping: engine.py), and a read,
    which changes nothing, is asked once more on a fresh connection.
    """
    with storage_errors(what, *others):
        return once_more_if_dropped(engine, read)


def once_more_if_dropped(engine: sa.Engine, read: Callable[[sa.Connection], T]) -> T:
    """``read(conn)`` on a pooled connection, once more on a fresh one if the server had
    dropped it (the pool is invalidated then); other failures raised as they are."""
    try:
        with engine.connect() as conn:
            return read(conn)
    except sa.exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    with engine.connect() as conn:
        return read(conn)
