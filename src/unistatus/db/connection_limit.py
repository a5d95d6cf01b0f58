"""A connection the server refuses for a limit: the role's or the database's
``CONNECTION LIMIT``, ``max_connections``, the slots reserved for superusers.

PostgreSQL sends these as SQLSTATE 53300 (too_many_connections) during the startup
handshake, before anything of a statement was sent: nothing was written, so a write may
be retried on it whatever it was about to do. psycopg 3 keeps no SQLSTATE for a failed
connect (the error has no result to carry it), so the server's words are matched too,
only as libpq reports a refused connect (after "FATAL:") and only on an error without a
SQLSTATE: a statement's error has one, and its DETAIL may quote the caller's own data
(a CHECK's "Failing row contains (...)"). The words are the same in every release
since 9.x, in English (a server with another ``lc_messages`` sends its own: then only
a driver that keeps the SQLSTATE is recognised).
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from unistatus.errors import ConnectionLimitError

__all__ = [
    "TOO_MANY_CONNECTIONS",
    "connection_limit_error",
    "driver_error",
    "limit_words",
    "pool_capacity",
    "refused_for_a_limit",
]

TOO_MANY_CONNECTIONS = "53300"
# The server's words for each limit (libpq puts them after "FATAL:  ").
_LIMIT_TEXTS = (
    "too many connections for role",  # the role's CONNECTION LIMIT
    "too many connections for database",  # the database's CONNECTION LIMIT
    "sorry, too many clients already",  # max_connections
    "remaining connection slots are reserved",  # superuser_reserved_connections & co
)
# As libpq reports a connect the server refused ("... failed: FATAL:  <words>"),
# or as :func:`connection_limit_error` says it (a message passed on as text).
_SAID = "the server refused a connection: "
_REFUSED = re.compile(
    rf"(?:FATAL:\s+|{_SAID})(?:" + "|".join(re.escape(words) for words in _LIMIT_TEXTS) + ")"
)
_WORDS = re.compile(
    r'too many connections for (?:role|database) "[^"]*"'
    r"|sorry, too many clients already"
    r"|remaining connection slots are reserved[^\n.]*"
)
_WHICH = (
    "the role's or the database's CONNECTION LIMIT, or the server's max_connections: "
    "see docs/scaling.md for what each unistatus process opens"
)


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own error under SQLAlchemy's wrappers (``exc`` itself if none)."""
    while isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        exc = exc.orig
    return exc


def refused_for_a_limit(exc: BaseException | str) -> bool:
    """Whether ``exc`` (SQLAlchemy's wrapper or the driver's error, or a message that
    quotes one) is the server refusing a new connection for a limit (SQLSTATE 53300,
    or its words)."""
    if isinstance(exc, ConnectionLimitError):
        return True
    if isinstance(exc, str):
        return _REFUSED.search(exc) is not None
    root = driver_error(exc)
    sqlstate = getattr(root, "sqlstate", None) or getattr(root, "pgcode", None)
    if sqlstate is not None:
        return bool(sqlstate == TOO_MANY_CONNECTIONS)
    return _REFUSED.search(str(root)) is not None


def limit_words(exc: BaseException) -> str:
    """The server's own words for the refusal (``too many connections for role "x"``),
    without libpq's host and port (nor what a message quoting them said after them)."""
    text = str(driver_error(exc)).strip()
    found = _WORDS.search(text)
    if found is not None:
        return found.group(0)
    return text.splitlines()[0] if text else type(exc).__name__


def pool_capacity(engine: sa.Engine | None) -> int | None:
    """How many connections ``engine``'s pool may open at once (pool_size +
    max_overflow); None when it is not bounded that way (NullPool, no overflow limit)."""
    pool = getattr(engine, "pool", None)
    if not isinstance(pool, sa.pool.QueuePool):
        return None
    overflow = int(getattr(pool, "_max_overflow", 0))  # QueuePool has no public reader
    return None if overflow < 0 else pool.size() + overflow


def connection_limit_error(
    what: str | None, exc: BaseException, pool: int | None = None
) -> ConnectionLimitError:
    """``exc`` (:func:`refused_for_a_limit`) as the typed error: what refused it, and
    how many connections this process's pool may open (``pool``, when known)."""
    if isinstance(exc, ConnectionLimitError):
        return exc
    text = f"{_SAID}{limit_words(exc)} ({_WHICH})"
    if pool is not None:
        text += f"; unistatus's pool for this process may open up to {pool}"
    return ConnectionLimitError(f"{what}: {text}" if what else text, pool)
