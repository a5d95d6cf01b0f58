"""A statement given up on a lock timeout, said with who held the lock (PostgreSQL).

Every connection of a command, of the adapter and of `serve` waits for a lock at most
``lock_timeout_ms`` (:func:`unistatus.db.engine.create_engine`). Before commands had it,
`phase status`, `mode get`, `plan` and the rest behind a session holding unistatus's
control table ACCESS EXCLUSIVE (a migration's DDL, a DBA's ``LOCK TABLE``) waited for as
long as it was held, saying nothing. Given up, the server's words ("canceling statement
due to lock timeout", then the statement's text) name no one: :func:`with_holders`
rewrites such a message (told by its SQLSTATE: :func:`lock_timeout_of`) as one line
naming whom it waited for: a row of the table the server names (its ``CONTEXT``: "while
locking tuple ... in relation ..."), else the sessions that hold a table ACCESS
EXCLUSIVE or are queued for that (:func:`unistatus.db.ddl_wait.lock_holders`), else
another transaction; and what to do. How long it waited is not said: the statement may
have had a bound of its own (``SET LOCAL``), not ``lock_timeout_ms``.

On SQLite, a write behind another connection's write lock (another command, the
application, a ``sqlite3`` shell in a transaction) waits the busy timeout, then fails
with "database is locked": said as the same one line, naming the write lock and how long
it waited (:data:`unistatus.db.engine.SQLITE_BUSY_TIMEOUT_MS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from unistatus.db import engine as engines
from unistatus.db.connection_limit import driver_error
from unistatus.db.ddl_wait import lock_holders
from unistatus.db.failures import canceled_on_a_lock, errors_behind
from unistatus.db.retry import RETRY_SQLSTATES

__all__ = ["LockTimeout", "lock_timeout_of", "rewritten", "with_holders"]

# What the driver puts before the server's words (in any language).
_DRIVER_PREFIX = "(psycopg.errors.LockNotAvailable)"
# How a lock timeout is said: by the server (English lc_messages), by storage_errors,
# by the driver's class of the error.
_SAID = ("canceling statement due to lock timeout", canceled_on_a_lock(), _DRIVER_PREFIX)
# The relation a row lock was waited on in, as the server's CONTEXT names it in English
# ("while locking tuple (0,2) in relation \"x\"", "while locking updated version (0,3)
# of tuple in relation \"x\""; another language's quotes do not match: not named so).
_ROW_OF = re.compile(r'\([0-9]+,[0-9]+\)[^"]*"([^"]+)"')
ANOTHER = "another transaction (an advisory lock, or a row's: see pg_locks)"
# How SQLite says a write gave up on the busy timeout (SQLITE_BUSY).
SQLITE_BUSY = "database is locked"
_SQLITE_HELD = (
    "another connection (the SQLite database's write lock: another command, the "
    "application, a sqlite3 shell in a transaction)"
)
_SQLITE_TO_DO = "End that connection's transaction or wait for it to end, then run it again"


@dataclass(frozen=True)
class LockTimeout:
    """How a message tells of a lock timeout: its words (``said``), and the table whose
    row the statement waited for where the server named it (``row_of``)."""

    said: str
    row_of: str | None = None


def lock_timeout_of(message: str, exc: BaseException | None = None) -> LockTimeout | None:
    """How ``message`` tells of a statement given up on a lock timeout (None: it does
    not): by the first line of the server's error behind ``exc`` (the error said, or one
    it was raised from) where its SQLSTATE says so (55P03, whatever the server's
    language), else by the words it says it with in English (a message without its
    exception)."""
    for error in errors_behind(exc) if exc is not None else ():
        root = driver_error(error)
        if RETRY_SQLSTATES.get(getattr(root, "sqlstate", None) or "") == "lock timeout":
            lines = str(root).strip().splitlines()
            if lines and lines[0] in message:
                context = getattr(getattr(root, "diag", None), "context", None) or ""
                row = _ROW_OF.search(context)
                return LockTimeout(lines[0], row.group(1) if row else None)
    said = next((words for words in (*_SAID, SQLITE_BUSY) if words in message), None)
    return None if said is None else LockTimeout(said)


def with_holders(message: str, timeout: LockTimeout, engine: sa.Engine) -> str:
    """``message`` (a lock timeout, told as ``timeout`` says) as one line naming whom it
    waited for (read on a connection of ``engine``'s own): :func:`rewritten`. As it is
    on any other database than PostgreSQL."""
    if engine.dialect.name == "sqlite" and timeout.said == SQLITE_BUSY:
        waited = f"busy_timeout, {engines.SQLITE_BUSY_TIMEOUT_MS / 1000:g} s"
        return rewritten(message, SQLITE_BUSY, _SQLITE_HELD, waited=waited, to_do=_SQLITE_TO_DO)
    if engine.dialect.name != "postgresql":
        return message
    if timeout.row_of is not None:
        table = _table_of(engine, timeout.row_of)
        held = f"another transaction holding a row of {table} (see pg_locks)"
    else:
        held = lock_holders(engine) or ANOTHER
    return rewritten(message, timeout.said, held)


def _table_of(engine: sa.Engine, relation: str) -> str:
    """``relation``'s table where it is an index (a unique key's insert waits on the
    index's tuple: "while inserting index tuple (0,6) in relation \"x_pkey\""); else
    itself, also when that cannot be read."""
    q = sa.text(
        "SELECT indrelid::regclass::text FROM pg_catalog.pg_index "
        "WHERE indexrelid = to_regclass(:name)"
    )
    try:
        with engine.connect() as conn:
            return conn.execute(q, {"name": relation}).scalar() or relation
    except sa.exc.DBAPIError:
        return relation


def rewritten(
    message: str,
    said: str,
    held: str,
    *,
    waited: str = "lock_timeout",
    to_do: str = (
        "End that transaction (its application's own, or pg_terminate_backend) or "
        "wait for it to end, then run it again"
    ),
) -> str:
    """``message`` with the words that tell of the lock timeout (``said``, and what the
    package or the driver said beside them: ours, the driver's class, the statement's
    lines the server quotes after them) replaced by ``held``, whom it waited for (the
    bound it gave up on: ``waited``); the rest of it kept (what failed, what was kept),
    and what to do (``to_do``) where it says nothing of running it again."""
    found = [i for i in (message.find(w) for w in {said, *_SAID}) if i >= 0]
    if not found:
        return message
    start = min(found)
    after = message.find(said, start)
    end = after + len(said) if after >= 0 else start
    if said == _DRIVER_PREFIX:  # the server's words after it, in a language not known
        end = message.find("\n", end) if "\n" in message[end:] else len(message)
    head, rest = message[:start].rstrip(), message[end:].split("\n", 1)[0].rstrip()
    for _ in range(2):  # ours before the driver's: "...(another session holds it): (psycopg..."
        head = head.removesuffix(_DRIVER_PREFIX).rstrip()
    head = head.removesuffix(":").rstrip()
    told = f"gave up waiting ({waited}) for a lock held by {held}"
    if not head:
        line = f"{told[0].upper()}{told[1:]}{rest}"
    else:  # "...within 30 s (gave up ...)": no colon after an opening parenthesis
        line = f"{head}{'' if head.endswith('(') else ': '}{told}{rest}"
    if "run it again" in line:
        return line
    return f"{line}. {to_do}"
