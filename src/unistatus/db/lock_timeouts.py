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

__all__ = ["rewritten", "said_on_a_lock_timeout", "with_holders"]

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
    (:func:`said_on_a_lock_timeout`), as one line naming who holds the lock (read on a
    connection of ``engine``'s own): :func:`rewritten`. As it is on any other database
    than PostgreSQL."""
    if engine.dialect.name != "postgresql":
        return message
    held = lock_holders(engine) or (
        "another transaction (a row's or an advisory lock: see pg_locks)"
    )
    return rewritten(message, said, held, lock_timeout_ms)


def rewritten(message: str, said: str, held: str, lock_timeout_ms: int) -> str:
    """``message`` with the words that tell of the lock timeout (``said``, and what the
    package or the driver said beside them: ours, the driver's class, the statement's
    lines the server quotes after them) replaced by how long it waited and ``held``, who
    holds the lock; the rest of it kept (what failed, what was kept), and what to do
    where it says nothing of running it again."""
    found = [i for i in (message.find(w) for w in {said, *_SAID}) if i >= 0]
    if not found:
        return message
    start = min(found)
    after = message.find(said, start)
    end = after + len(said) if after >= 0 else start
    head, rest = message[:start].rstrip(), message[end:].split("\n", 1)[0].rstrip()
    for _ in range(2):  # ours before the driver's: "...(another session holds it): (psycopg..."
        head = head.removesuffix(_DRIVER_PREFIX).rstrip()
    head = head.removesuffix(":").rstrip()
    waited = f" {lock_timeout_ms / 1000:g} s (lock_timeout_ms)" if lock_timeout_ms else ""
    told = f"gave up waiting{waited} for a lock held by {held}"
    if not head:
        line = f"{told[0].upper()}{told[1:]}{rest}"
    else:  # "...within 30 s (gave up ...)": no colon after an opening parenthesis
        line = f"{head}{'' if head.endswith('(') else ': '}{told}{rest}"
    if "run it again" in line:
        return line
    return (
        f"{line}. End that transaction (its application's own, or pg_terminate_backend) or "
        "wait for it to end, then run it again"
    )
