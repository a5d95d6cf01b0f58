"""A statement given up on a lock timeout, said with who held the lock (PostgreSQL).

Every connection of a command, of the adapter and of `serve` waits for a lock at most
``lock_timeout_ms`` (:func:`unistatus.db.engine.create_engine`). Before commands had it,
`phase status`, `mode get`, `plan` and the rest behind a session holding unistatus's
control table ACCESS EXCLUSIVE (a migration's DDL, a DBA's ``LOCK TABLE``) waited for as
long as it was held, saying nothing. Given up, the server's words ("canceling statement
due to lock timeout", then the statement's text) name no one: :func:`with_holders`
rewrites such a message (:func:`said_on_a_lock_timeout`: by its SQLSTATE) as one line naming the sessions that hold a table ACCESS
EXCLUSIVE, or are queued for that (:func:`unistatus.db.ddl_wait.lock_holders`), and what
to do. (A wait for a row's or an advisory lock has no table lock to name it by: said as
another transaction's.)
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.connection_limit import driver_error
from unistatus.db.ddl_wait import lock_holders
from unistatus.db.failures import canceled_on_a_lock
from unistatus.db.retry import RETRY_SQLSTATES

__all__ = ["said_on_a_lock_timeout", "with_holders"]

# What the driver puts before the server's words (in any language).
_DRIVER_PREFIX = "(psycopg.errors.LockNotAvailable)"
# How a lock timeout is said: by the server (English lc_messages), by storage_errors,
# by the driver's class of the error.
_SAID = ("canceling statement due to lock timeout", canceled_on_a_lock(), _DRIVER_PREFIX)


def said_on_a_lock_timeout(message: str, exc: BaseException | None = None) -> str | None:
    """The words of ``message`` that tell of a statement given up on a lock timeout (None:
    it tells of none): the first line of the server's error behind ``exc`` (the error
    said, or one it was raised from) where its SQLSTATE says so (55P03, whatever the
    server's language), else the words it says it with in English (a message without
    its exception: an older wrapper's text)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        root = driver_error(exc)
        if RETRY_SQLSTATES.get(getattr(root, "sqlstate", None) or "") == "lock timeout":
            lines = str(root).strip().splitlines()
            if lines and lines[0] in message:
                return lines[0]
        exc = exc.__cause__ or exc.__context__
    return next((said for said in _SAID if said in message), None)


def with_holders(message: str, said: str, engine: sa.Engine, lock_timeout_ms: int) -> str:
    """``message``, which tells of a lock timeout in the words ``said``
    (:func:`said_on_a_lock_timeout`), as one line: what failed (its words before those),
    how long it waited, who holds the lock (read on a connection of ``engine``'s own)
    and what to do. As it is on any other database than PostgreSQL."""
    if engine.dialect.name != "postgresql":
        return message
    what = message[: message.find(said)].replace(_DRIVER_PREFIX, "").strip()
    what = what.rstrip(":;,").strip()
    held = lock_holders(engine) or (
        "another transaction (a row's or an advisory lock: see pg_locks)"
    )
    waited = f" after {lock_timeout_ms / 1000:g} s (lock_timeout_ms)" if lock_timeout_ms else ""
    return (
        f"{what or 'the command failed'}: gave up{waited} waiting for a lock held by {held}. "
        "End that transaction (its application's own, or pg_terminate_backend) or wait "
        "for it to end, then run it again"
    )
