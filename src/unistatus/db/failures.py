"""The database's failures as :class:`~unistatus.errors.StorageError`, written once.

A public function never lets SQLAlchemy's or the driver's exception escape: its
message carries the statement and its parameters (callers' data), and callers catch
:class:`~unistatus.errors.UnistatusError`. :func:`storage_errors` wraps a block,
:func:`describe` says what failed in the driver's words, :func:`one_line` says it in
one redacted line (for notes and summaries that are shown or stored).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import sqlalchemy as sa

from unistatus.db.connection_limit import (
    connection_limit_error,
    driver_error,
    refused_for_a_limit,
)
from unistatus.errors import SessionSettingsError, StorageError
from unistatus.redact import redact

__all__ = [
    "canceled",
    "describe",
    "errors_behind",
    "interrupt_behind",
    "once_more_if_dropped",
    "one_line",
    "read_on_pool",
    "read_only_refusal",
    "refused_because",
    "session_settings_named",
    "storage_errors",
    "unfit_session",
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


# What the driver raises on a session setting it cannot work with: text the
# client_encoding cannot carry, timestamps in another DateStyle than ISO (psycopg 3).
_UNFIT: tuple[type[Exception], ...] = (UnicodeEncodeError, NotImplementedError)
_SQL_OR_UNFIT: tuple[type[Exception], ...] = (sa.exc.SQLAlchemyError, *_UNFIT)
_UNTRANSLATABLE = "22P05"  # the server cannot convert stored text to client_encoding
_TIMEOUTS = {
    "55P03": "a lock was not granted within lock_timeout (another session holds it)",
    "57014": "a statement was canceled (statement_timeout, or a cancel request)",
}


@contextmanager
def storage_errors(what: str, *others: type[Exception]) -> Iterator[None]:
    """SQLAlchemy's errors (and ``others``, e.g. the driver's own) as StorageError:
    ``what`` failed, and why (a timeout named as one: :func:`canceled`); a session
    setting the driver cannot work with as SessionSettingsError (:func:`unfit_session`);
    a connection refused for a limit as ConnectionLimitError (db.connection_limit)."""
    caught: tuple[type[Exception], ...] = (sa.exc.SQLAlchemyError, *others)
    try:
        yield
    except (*caught, *_UNFIT) as exc:
        unfit = unfit_session(exc)
        if unfit is not None:
            raise unfit from None
        if not isinstance(exc, caught):
            raise
        if refused_for_a_limit(exc):  # up and reachable, but full: not "unreachable"
            raise connection_limit_error(what, exc) from None
        timeout = canceled(exc)
        if timeout is not None:  # the database was reached, and what timed out is said
            raise StorageError(f"{what}: {timeout}: {describe(exc)}") from None
        raise StorageError(f"{what}: {describe(exc)}") from None


@contextmanager
def session_settings_named() -> Iterator[None]:
    """A block's failure that comes of a session setting (:func:`unfit_session`) as
    SessionSettingsError; any other raised as it is."""
    try:
        yield
    except _SQL_OR_UNFIT as exc:
        unfit = unfit_session(exc)
        if unfit is not None:
            raise unfit from None
        raise


_ENGINE_HINT = (
    "set it for the role (ALTER ROLE ... SET) or on the connection, or give unistatus a "
    "URL or an engine from unistatus.db.engine.create_engine, whose connections set it"
)


def _sqlstate(exc: BaseException) -> str | None:
    root = driver_error(exc)
    return getattr(root, "sqlstate", None) or getattr(root, "pgcode", None)


# PostgreSQL's 22P05 message: 'character ... in encoding "A" has no equivalent in encoding "B"'.
_CONVERSION = re.compile(r'in encoding "([^"]+)" has no equivalent in encoding "([^"]+)"')


def unfit_session(exc: BaseException) -> SessionSettingsError | None:
    """``exc`` as the session setting it comes of, where it does: text the connection's
    ``client_encoding`` cannot carry (either way), a timestamp psycopg cannot parse
    outside ISO ``DateStyle``. None for any other error. Not a database failure: the
    connection's settings (an application's own engine or connection; unistatus's own
    connections set both, :mod:`unistatus.db.connection_setup`)."""
    root = driver_error(exc)
    if isinstance(root, UnicodeEncodeError):  # the driver's, before anything was sent
        return SessionSettingsError(
            "client_encoding",
            f"the connection's client_encoding cannot carry this text ({describe(exc)}): "
            f"unistatus needs client_encoding UTF8; {_ENGINE_HINT}",
        )
    if _sqlstate(exc) == _UNTRANSLATABLE:
        # The server's conversion, one way or the other: the message names both ends.
        ends = _CONVERSION.search(str(root))
        target = ends.group(2) if ends else "the other encoding"
        return SessionSettingsError(
            "encoding",
            f"the text cannot be converted between the connection and the database "
            f"({describe(exc)}): the database's server_encoding or the connection's "
            f"client_encoding is {target}, which cannot hold it. unistatus's own "
            "connections use UTF8 (then the database cannot store this text: store text "
            f"its encoding holds); an application's connection: {_ENGINE_HINT}",
        )
    if isinstance(root, NotImplementedError) and "DateStyle" in str(root):
        return SessionSettingsError(
            "DateStyle",
            f"the connection's DateStyle is not ISO ({describe(exc)}): psycopg reads "
            f"timestamps only in DateStyle ISO; {_ENGINE_HINT}",
        )
    return None


def canceled(exc: BaseException) -> str | None:
    """What timed out where ``exc`` is a statement the server canceled (a lock not
    granted within ``lock_timeout``, a ``statement_timeout``): the database was
    reached and is up. None for any other error."""
    return _TIMEOUTS.get(_sqlstate(exc) or "")


def canceled_on_a_lock() -> str:
    """How :func:`canceled` says a lock not granted within ``lock_timeout``."""
    return _TIMEOUTS["55P03"]


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM, on the command line) that ``exc`` was raised while
    handling, if any: a failure of the cleanup on the way out of a statement the
    interrupt cut short (a rollback on the connection the driver left mid-command).
    That is the interruption, not a failure of the work in hand."""
    return next((e for e in errors_behind(exc) if isinstance(e, KeyboardInterrupt)), None)


def errors_behind(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then each error it was raised from or while handling (its cause, else
    its context), each once: what a wrapper raised ``from None`` still keeps as its
    context (a StorageError replacing the driver's error)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        yield cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__


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
