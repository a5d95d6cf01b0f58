"""Taking the exclusive mode lock without stopping the writers it waits for (PostgreSQL).

A mode switch (and a replay, and a phase's switch) takes the mode lock exclusive, so it
waits for the writes in flight: the adapter's own transactions last milliseconds, but a
caller's transaction (issue 12: the application's own) may stay open for as long as the
application keeps it. PostgreSQL grants no new lock that conflicts with one a session is
*waiting* for, so every write of the system then queued behind the waiting switch: one
slow application transaction and an operator's `mode set` stopped the whole service.

As pgroll and gh-ost do for their DDL, the switch queues for the lock :data:`ATTEMPT_MS`
at a time (``lock_timeout``, in a savepoint), and between attempts steps out of the
queue so the writers go on, pausing a little longer each time; after
:data:`WAIT_SECONDS` in all it gives up with :class:`~unistatus.errors.ModeLockBusyError`
naming the sessions that hold the lock. Nothing is written before the lock is held.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa

from unistatus.db.retry import retry_reason
from unistatus.errors import ModeLockBusyError

__all__ = ["ATTEMPT_MS", "WAIT_SECONDS", "lock_holders", "take_waiting_politely"]

log = logging.getLogger("unistatus.db")

# How long one attempt queues for the lock: the longest a writer waits behind it.
ATTEMPT_MS = 200
# Pauses between attempts: the first, then doubled up to the last.
FIRST_PAUSE_SECONDS = 0.05
LONGEST_PAUSE_SECONDS = 1.0
# How long a switch keeps trying in all before it gives up.
WAIT_SECONDS = 60.0
# After this long it says (once, in the log) whom it waits for.
SAY_AFTER_SECONDS = 2.0

_LOCKS = sa.table(
    "pg_locks",
    sa.column("locktype"),
    sa.column("classid"),
    sa.column("objid"),
    sa.column("objsubid"),
    sa.column("pid"),
    sa.column("granted"),
    schema="pg_catalog",
)
_ACTIVITY = sa.table(
    "pg_stat_activity",
    sa.column("pid"),
    sa.column("application_name"),
    sa.column("state"),
    sa.column("xact_start"),
    schema="pg_catalog",
)


def take_waiting_politely(
    conn: sa.Connection,
    take: sa.Executable,
    keys: tuple[int, ...],
    what: str,
    *,
    wait_seconds: float | None = None,
) -> None:
    """Run ``take`` (a statement taking advisory locks exclusive) the polite way (the
    module doc), giving up after ``wait_seconds`` (None: :data:`WAIT_SECONDS`; at least
    one attempt). ``keys``: the locks' keys, to name their holders; ``what``: the lock,
    for messages. Any other database error is raised as it is."""
    wait = WAIT_SECONDS if wait_seconds is None else wait_seconds
    started = time.monotonic()
    pause, said = FIRST_PAUSE_SECONDS, False
    previous = conn.execute(sa.select(sa.func.current_setting("lock_timeout"))).scalar_one()
    while True:
        try:
            with conn.begin_nested():
                conn.execute(sa.select(sa.func.set_config("lock_timeout", f"{ATTEMPT_MS}ms", True)))
                conn.execute(take)
            break
        except sa.exc.OperationalError as exc:
            if retry_reason(exc) != "lock timeout":
                raise
        waited = time.monotonic() - started
        if waited >= wait:
            raise ModeLockBusyError(what, waited, lock_holders(conn, keys))
        if not said and waited >= SAY_AFTER_SECONDS:
            said = True
            log.warning(
                "waiting for the %s (writers go on meanwhile): held by %s",
                what,
                ModeLockBusyError.describe(lock_holders(conn, keys)),
            )
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
    conn.execute(sa.select(sa.func.set_config("lock_timeout", previous, True)))


def lock_holders(conn: sa.Connection, keys: tuple[int, ...]) -> list[dict[str, Any]]:
    """The other sessions holding any advisory lock of ``keys`` (one bigint each: its
    high and low 32 bits are ``classid`` and ``objid``), longest-open transaction first."""
    halves = [((k >> 32) & 0xFFFFFFFF, k & 0xFFFFFFFF) for k in keys]
    L, A = _LOCKS, _ACTIVITY
    q = (
        sa.select(
            A.c.pid,
            A.c.application_name,
            A.c.state,
            # statement_timestamp(): now() is this transaction's start, older than theirs
            # (and clock_timestamp() differs row by row, defeating DISTINCT).
            sa.func.extract("epoch", sa.func.statement_timestamp() - A.c.xact_start).label(
                "open_seconds"
            ),
        )
        .distinct()
        .select_from(L.join(A, A.c.pid == L.c.pid))
        .where(
            L.c.locktype == "advisory",
            L.c.objsubid == 1,
            L.c.granted,
            L.c.pid != sa.func.pg_backend_pid(),
            sa.or_(
                *(
                    sa.and_(
                        sa.cast(L.c.classid, sa.BigInteger) == hi,
                        sa.cast(L.c.objid, sa.BigInteger) == lo,
                    )
                    for hi, lo in halves
                )
            ),
        )
        .order_by(sa.literal_column("open_seconds").desc())
    )
    return [
        {
            "pid": row.pid,
            "application_name": row.application_name or "",
            "state": row.state,
            "open_seconds": round(float(row.open_seconds or 0.0), 1),
        }
        for row in conn.execute(q)
    ]
