"""Taking the exclusive mode lock without stopping the writers it waits for (PostgreSQL).

A mode switch (and a replay, and a phase's switch) takes the mode lock exclusive, so it
waits for the writes in flight: the adapter's own transactions last milliseconds, but a
caller's transaction (issue 12: the application's own) may stay open for as long as the
application keeps it. PostgreSQL grants no new lock that conflicts with one a session is
*waiting* for, so every write of the system then queued behind the waiting switch: one
slow application transaction and an operator's `mode set` stopped the whole service.

As pgroll and gh-ost do for their DDL, the switch never queues unbounded. Before each
attempt it reads who holds what it needs (:func:`lock_holders`). Behind a transaction
open for :data:`LONG_SECONDS` or more (not about to end; a transaction whose age it may
not read, another role's or a prepared one, is as old as it has been seen holding the
lock) it does not queue at all: it looks again every :data:`POLL_SECONDS` while the
writers go on. Otherwise it queues for the
lock with a ``lock_timeout`` (in a savepoint) of :data:`FIRST_ATTEMPT_MS`, doubled after
each attempt that timed out up to :data:`LONGEST_ATTEMPT_MS` (a steady stream of
transactions of a few hundred ms each is waited out), and steps out of the queue
between attempts so the writers go on. After ``wait_seconds`` in all it gives up with
:class:`~unistatus.errors.ModeLockBusyError` naming the holders. Nothing is written
before the lock is held. With tables to lock SHARE as well (a retirement's), the attempt
takes them first; once it holds one lock it waits for the rest half ``deadlock_timeout``
in all, and the next attempt queues for the busy one first (docs/retire.md).

Reading other roles' sessions' ages and states needs ``pg_read_all_stats`` (or
superuser): without it the holders are named by pid and ``application_name`` only
(state "unknown"), and aged from when the switch first saw them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from unistatus.db.retry import retry_reason
from unistatus.db.server_views import PG_LOCKS, PG_STAT_ACTIVITY, this_database
from unistatus.errors import ModeLockBusyError

__all__ = [
    "LONG_SECONDS",
    "WAIT_SECONDS",
    "Blocker",
    "deadlock_timeout_ms",
    "lock_holders",
    "take_waiting_politely",
]

log = logging.getLogger("unistatus.db")

# A lock the switch waits for: its key, and whether only an exclusive holder blocks it
# (the installation's key, which a switch of one system takes shared).
Blocker = tuple[int, bool]

# The first attempt's time in the queue (the longest a writer then waits behind it),
# doubled after each attempt that timed out, up to the last.
FIRST_ATTEMPT_MS = 200
LONGEST_ATTEMPT_MS = 2_000
# An attempt never outlasts the time left, but is never shorter than this.
SHORTEST_ATTEMPT_MS = 50
# A holder whose transaction has been open this long is not about to end: no attempt.
LONG_SECONDS = 2.0
# Between attempts (and looks behind a long transaction: pg_locks is not read often).
POLL_SECONDS = 0.25
# How long a switch keeps trying in all before it gives up (the library's default; the
# commands pass the mode_lock_wait_seconds setting).
WAIT_SECONDS = 60.0
# After this long it says (once, in the log) whom it waits for.
SAY_AFTER_SECONDS = 2.0


def take_waiting_politely(
    conn: sa.Connection,
    take: sa.Executable,
    blockers: list[Blocker],
    what: str,
    *,
    wait_seconds: float | None = None,
    tables: Sequence[str] = (),
    exclusive: Sequence[str] = (),
) -> None:
    """Run ``take`` (a statement taking advisory locks exclusive) the polite way (the
    module doc), giving up after ``wait_seconds`` (None: :data:`WAIT_SECONDS`).
    ``blockers``: what it waits for, to read the holders; ``what``: the lock, for
    messages. ``tables`` (SQL names): locked SHARE in the same attempt, before ``take``
    (their writers held back with the writes the mode lock holds; a writer's statement
    in flight, whose capture trigger will ask for the mode lock, ends first instead of
    deadlocking with it); ``exclusive`` (SQL names): locked ACCESS EXCLUSIVE in it too,
    before them (relations about to be dropped: every reader of them ends first).
    Any other database error is raised as it is (the savepoint rolled back, the
    transaction usable)."""
    wait = WAIT_SECONDS if wait_seconds is None else wait_seconds
    started = time.monotonic()
    attempt_ms, said = FIRST_ATTEMPT_MS, False
    first_seen: dict[str, float] = {}  # a holder's transaction: when first seen holding
    previous = conn.execute(sa.select(sa.func.current_setting("lock_timeout"))).scalar_one()
    takes = [*(_lock(t, "ACCESS EXCLUSIVE") for t in exclusive)]
    takes += [*(_lock(t, "SHARE") for t in tables), take]
    # Once one lock is held, the others are waited for no longer than half the server's
    # deadlock_timeout in all: a session that waits for the one held may hold one that
    # comes next (a writer's trigger asks for the mode lock at its statement's end), and
    # this attempt then gives up before that session's deadlock check could end it.
    then_ms = deadlock_timeout_ms(conn) // 2 if len(takes) > 1 else 0
    while True:
        holders = lock_holders(conn, blockers, tables, exclusive)
        now = time.monotonic()
        for h in holders:
            first_seen.setdefault(h["transaction"], now)
        # Its age from pg_stat_activity, else (another role's session, a prepared
        # transaction) at least how long it has been seen holding the lock. Not a
        # vacuum or analyze: the server cancels an automatic one for a lock queued
        # behind it for deadlock_timeout (the attempts grow past it).
        stuck = any(
            max(h["open_seconds"] or 0.0, now - first_seen[h["transaction"]]) >= LONG_SECONDS
            for h in holders
            if not h["maintenance"]
        )
        if not stuck:
            left_ms = (wait - (time.monotonic() - started)) * 1000
            timeout_ms = int(max(min(attempt_ms, left_ms), SHORTEST_ATTEMPT_MS))
            busy = _attempt(conn, takes, timeout_ms, min(then_ms, timeout_ms))
            if busy is None:
                break
            # The next attempt queues for the busy one first, holding nothing meanwhile.
            takes.insert(0, takes.pop(busy))
            attempt_ms = min(attempt_ms * 2, LONGEST_ATTEMPT_MS)
        waited = time.monotonic() - started
        if waited >= wait:
            raise ModeLockBusyError(what, waited, lock_holders(conn, blockers, tables, exclusive))
        if not said and waited >= SAY_AFTER_SECONDS:
            said = True
            log.warning(
                "waiting for the %s (writers go on meanwhile): held by %s",
                what,
                ModeLockBusyError.describe(holders),
            )
        time.sleep(POLL_SECONDS)
    conn.execute(sa.select(sa.func.set_config("lock_timeout", previous, True)))


def _attempt(
    conn: sa.Connection, takes: list[sa.Executable], timeout_ms: int, then_ms: int
) -> int | None:
    """Take ``takes`` in a savepoint: queue for the first ``timeout_ms`` at most, for the
    rest ``then_ms`` in all. None: all taken; else the position of the one that was not
    (none is held then)."""
    position = 0
    try:
        with conn.begin_nested():
            _lock_timeout(conn, timeout_ms)
            conn.execute(takes[0])
            until = time.monotonic() + then_ms / 1000
            for position, take in enumerate(takes[1:], 1):  # noqa: B007 - read below
                left_ms = int((until - time.monotonic()) * 1000)
                if left_ms < 1:
                    raise _OutOfTime
                _lock_timeout(conn, left_ms)
                conn.execute(take)
    except _OutOfTime:
        return position
    except sa.exc.OperationalError as exc:
        if retry_reason(exc) not in ("lock timeout", "deadlock"):
            raise
        return position
    return None


class _OutOfTime(Exception):
    """The attempt's time for the locks after its first ran out (its savepoint rolled
    back on the way out)."""


def _lock_timeout(conn: sa.Connection, ms: int) -> None:
    conn.execute(sa.select(sa.func.set_config("lock_timeout", f"{ms}ms", True)))


def deadlock_timeout_ms(conn: sa.Connection) -> int:
    """The server's deadlock_timeout, in ms (pg_settings keeps it so)."""
    q = sa.text("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'deadlock_timeout'")
    return int(conn.execute(q).scalar_one())


# The table lock modes a SHARE lock waits for: every writer's (ROW EXCLUSIVE) and more.
_SHARE_CONFLICTS = (
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)


def _lock(table: str, mode: str) -> sa.Executable:
    return sa.text(f"LOCK TABLE {table} IN {mode} MODE".replace(":", "\\:"))


def lock_holders(
    conn: sa.Connection,
    blockers: list[Blocker],
    tables: Sequence[str] = (),
    exclusive: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The other sessions of this database holding a lock of ``blockers`` in a mode that
    blocks the switch (an advisory lock of one bigint key: its high and low 32 bits are
    ``classid`` and ``objid``), or one of ``tables`` in a mode that blocks a SHARE lock
    (a writer), or any lock on one of ``exclusive`` (a reader too), longest-open
    transaction first; ``transaction``: its virtual transaction
    id. ``open_seconds`` None: unknown (another role's session without
    ``pg_read_all_stats``, a prepared transaction)."""
    L, A = PG_LOCKS, PG_STAT_ACTIVITY
    # The statistics of a transaction are a snapshot taken at its first read: cleared,
    # so each call sees the sessions as they are now.
    conn.execute(sa.select(sa.func.pg_stat_clear_snapshot()))
    here = this_database()
    matches = []
    for key, exclusive_only in blockers:
        match = sa.and_(
            sa.cast(L.c.classid, sa.BigInteger) == (key >> 32) & 0xFFFFFFFF,
            sa.cast(L.c.objid, sa.BigInteger) == key & 0xFFFFFFFF,
        )
        matches.append(sa.and_(match, L.c.mode == "ExclusiveLock") if exclusive_only else match)
    q = (
        sa.select(
            L.c.pid,
            L.c.virtualtransaction,
            A.c.application_name,
            A.c.state,
            # statement_timestamp(): now() is this transaction's start, older than theirs
            # (and clock_timestamp() differs row by row, defeating DISTINCT).
            sa.func.extract("epoch", sa.func.statement_timestamp() - A.c.xact_start).label(
                "open_seconds"
            ),
            # A vacuum's or analyze's hold on a table (and CREATE INDEX CONCURRENTLY's).
            sa.and_(L.c.locktype == "relation", L.c.mode == "ShareUpdateExclusiveLock").label(
                "maintenance"
            ),
        )
        .distinct()
        .select_from(L.outerjoin(A, A.c.pid == L.c.pid))
        .where(
            L.c.database == here,
            L.c.granted,
            # A prepared transaction's locks have no pid: they block all the same.
            L.c.pid.is_distinct_from(sa.func.pg_backend_pid()),
            sa.or_(
                sa.and_(L.c.locktype == "advisory", L.c.objsubid == 1, sa.or_(*matches)),
                sa.and_(
                    L.c.locktype == "relation",
                    L.c.relation.in_([sa.func.to_regclass(t) for t in tables]),
                    L.c.mode.in_(_SHARE_CONFLICTS),
                )
                if tables
                else sa.false(),
                sa.and_(
                    L.c.locktype == "relation",
                    L.c.relation.in_([sa.func.to_regclass(t) for t in exclusive]),
                )
                if exclusive
                else sa.false(),
            ),
        )
        .order_by(sa.literal_column("open_seconds").desc().nulls_last())
    )
    return [
        {
            "pid": row.pid,
            "transaction": str(row.virtualtransaction),
            "application_name": row.application_name or "",
            "state": row.state or "unknown",
            "open_seconds": None if row.open_seconds is None else round(float(row.open_seconds), 1),
            "maintenance": bool(row.maintenance),
        }
        for row in conn.execute(q)
    ]
