"""A statement given up on a lock timeout, said with who held the lock (PostgreSQL).

Every connection of a command, of the adapter and of `serve` waits for a lock at most
``lock_timeout_ms`` (:func:`unistatus.db.engine.create_engine`). Before commands had it,
`phase status`, `mode get`, `plan` and the rest behind a session holding unistatus's
control table ACCESS EXCLUSIVE (a migration's DDL, a DBA's ``LOCK TABLE``) waited for as
long as it was held, saying nothing. Given up, the server's words ("canceling statement
due to lock timeout", then the statement's text) name no one: :func:`with_holders`
rewrites such a message as one line naming the sessions that hold a table ACCESS
EXCLUSIVE, or are queued for that (:func:`unistatus.db.ddl_wait.lock_holders`), and what
to do. (A wait for a row's or an advisory lock has no table lock to name it by: said as
another transaction's.)
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.ddl_wait import lock_holders
from unistatus.db.failures import canceled_on_a_lock

__all__ = ["gave_up_on_a_lock", "with_holders"]

# How a lock timeout is said: by the server (English lc_messages), by storage_errors.
_SAID = ("canceling statement due to lock timeout", canceled_on_a_lock())
# What the driver puts before the server's words.
_DRIVER_PREFIX = "(psycopg.errors.LockNotAvailable)"


def gave_up_on_a_lock(message: str) -> bool:
    """Whether ``message`` tells of a statement given up on a lock timeout."""
    return any(said in message for said in _SAID)


def with_holders(message: str, engine: sa.Engine, lock_timeout_ms: int) -> str:
    """``message`` (a lock timeout: :func:`gave_up_on_a_lock`) as one line: what failed
    (its words before the server's), how long it waited, who holds the lock (read on a
    connection of ``engine``'s own) and what to do. Any other message as it is."""
    at = min((message.find(s) for s in _SAID if s in message), default=-1)
    if at < 0 or engine.dialect.name != "postgresql":
        return message
    what = message[:at].replace(_DRIVER_PREFIX, "").strip().rstrip(":;,").strip()
    held = lock_holders(engine) or (
        "another transaction (a row's or an advisory lock: see pg_locks)"
    )
    waited = f" after {lock_timeout_ms / 1000:g} s (lock_timeout_ms)" if lock_timeout_ms else ""
    return (
        f"{what or 'the command failed'}: gave up{waited} waiting for a lock held by {held}. "
        "End that transaction (its application's own, or pg_terminate_backend) or wait "
        "for it to end, then run it again"
    )
