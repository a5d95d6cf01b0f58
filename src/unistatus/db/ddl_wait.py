"""DDL attempts that never queue behind a long transaction (PostgreSQL).

PostgreSQL grants no lock that conflicts with one a session is *waiting* for. An ALTER
TABLE (ACCESS EXCLUSIVE) or a CREATE TRIGGER (SHARE ROW EXCLUSIVE) queued behind one
long reader or writer held every writer of the table behind it for as long as it
waited: a DBA's review measured `retire legacy-columns` behind a 100 s report queue its
DDL for the whole lock_timeout (5 s) again and again for a minute, ten stalls of ~5 s
for every writer of cashouts, then give up naming no one (and the wrong command to run
again); `capture enable` behind a writer idle in its transaction did the same once.

As gh-ost, pgroll and django-pg-zero-downtime-migrations do, :func:`run_politely` looks
first. Before each attempt it reads who holds a lock on the tables the attempt changes
that conflicts with the lock it takes (:func:`table_holders`). Behind a transaction open
for :data:`LONG_SECONDS` or more (not about to end; one whose age it may not read is as
old as it has been seen holding) it does not queue at all: it looks again after a pause,
holding no lock and asking for none, so writers go on. Otherwise it attempts, each lock
wait at most :func:`attempt_ms` (the ``ddl_lock_timeout_ms`` setting, 500 ms, or
``lock_timeout_ms`` if smaller): a lock timeout (or a deadlock) rolls the attempt back
whole and the next comes after a pause with jitter (writers queued behind the attempt
get through first). The pauses grow from :data:`FIRST_PAUSE_SECONDS` to
:data:`LONGEST_PAUSE_SECONDS`. At its deadline it gives up with
:class:`~unistatus.errors.TableLockBusyError`, nothing changed, naming the holders (pid,
application_name, state, how long open, what they hold) and the command to run again.

The look reads too (the tables it names; a retirement's, the control table), each of its
lock waits bounded as an attempt's: a read waits only for a session holding one of
them ACCESS EXCLUSIVE (a migration's DDL, a LOCK TABLE), or queued for that ahead of it,
and a look kept waiting so is one more sign of busy tables, never a failure of its own:
no attempt, a pause, another look, and at the deadline the sessions that hold a table
ACCESS EXCLUSIVE, or are queued for that, are named (:func:`read_blockers`).

An autovacuum worker is not waited aside for: the server cancels it for a lock request
queued behind it for ``deadlock_timeout``, so an attempt it blocks queues that long.
Reading other roles' sessions' ages and states needs ``pg_read_all_stats``: without it
holders are aged from when they were first seen, as the mode lock does
(:mod:`unistatus.db.mode_lock_wait`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.bounded_reads import bounded_reads
from unistatus.db.mode_lock_wait import LONG_SECONDS, deadlock_timeout_ms
from unistatus.db.retry import retry_reason
from unistatus.db.server_views import PG_CLASS, PG_LOCKS, PG_STAT_ACTIVITY, this_database
from unistatus.errors import StorageError, TableLockBusyError

__all__ = [
    "LONG_SECONDS",
    "Changes",
    "attempt_ms",
    "lock_holders",
    "read_blockers",
    "read_politely",
    "run_politely",
    "table_holders",
]

log = logging.getLogger("unistatus.db")

T = TypeVar("T")

# The pause after a failed attempt (and between looks behind a long transaction): the
# first, doubled each time up to the longest; each one drawn from half to one and a half
# times that (jitter: two commands waiting for the same tables do not keep colliding).
FIRST_PAUSE_SECONDS = 0.25
LONGEST_PAUSE_SECONDS = 2.0
# After this long it says (once, in the log) whom it waits for.
SAY_AFTER_SECONDS = 2.0
# What is tried again: a lock not had within the attempt's lock timeout, or a deadlock.
RETRIED = ("lock timeout", "deadlock")


@dataclass(frozen=True)
class Changes:
    """The tables an attempt locks, as SQL names them, by the lock it takes on them."""

    exclusive: Sequence[str] = ()  # ACCESS EXCLUSIVE (ALTER TABLE, DROP TRIGGER): any lock blocks
    share_row: Sequence[str] = ()  # SHARE ROW EXCLUSIVE (CREATE TRIGGER): a writer blocks
    # Advisory locks (exclusive) taken first, by key: the migration lock (db.migration_lock).
    advisory: Sequence[tuple[int, str]] = ()  # (key, what its holder is doing)


def attempt_ms(settings: Settings) -> int:
    """How long each attempt may wait for one lock: ``ddl_lock_timeout_ms``, or
    ``lock_timeout_ms`` if that is smaller (0: the server's own, not smaller)."""
    own = settings.ddl_lock_timeout_ms
    return min(own, settings.lock_timeout_ms) if settings.lock_timeout_ms > 0 else own


def run_politely(
    engine: sa.Engine,
    attempt: Callable[[int], T],
    changes: Callable[[sa.Connection], Changes],
    *,
    lock_ms: int,
    what: str,
    command: str,
    wait_seconds: float,
    look_first: bool = True,
) -> T:
    """``attempt(ms)`` (one transaction, each of its lock waits bounded by ``ms``: at
    least ``lock_ms``, see :func:`attempt_ms`) the polite way (the module doc), until
    ``wait_seconds`` have passed; its result. ``changes``: the tables it locks, read on a
    connection of its own before each attempt (PostgreSQL). ``what``: what it does
    ("drop the legacy status columns"), ``command``: what to run again, for the message.
    ``look_first`` False: the first attempt without a look (a command that may have
    nothing to change, as `init` on an installation at its head, is not held up by a
    long reader it would not have waited for). Any error but a lock wait is raised as it
    is."""
    started = time.monotonic()
    pause, said, look = FIRST_PAUSE_SECONDS, False, look_first
    first_seen: dict[str, float] = {}
    holders: list[dict[str, Any]] = []
    while True:
        stuck, least_ms = False, 0
        if look and engine.dialect.name == "postgresql":
            holders, stuck, least_ms = _look(engine, changes, first_seen, lock_ms)
        look = True
        if not stuck:
            try:
                return attempt(max(lock_ms, least_ms))
            except (sa.exc.OperationalError, StorageError) as exc:
                if not _a_lock_wait(exc):
                    raise
        waited = time.monotonic() - started
        left = wait_seconds - waited
        if left <= 0:
            if engine.dialect.name == "postgresql":
                holders, _, _ = _look(engine, changes, first_seen, lock_ms)
            # Named: the long transactions it waited aside for, not a writer caught in
            # its few milliseconds (any, if none is long).
            now = time.monotonic()
            named = [h for h in holders if _age(h, first_seen, now) >= LONG_SECONDS]
            raise TableLockBusyError(what, waited, named or holders, command)
        if not said and waited >= SAY_AFTER_SECONDS and holders:
            said = True
            log.warning(
                "%s waits for the tables it must change (writers go on meanwhile): held by %s",
                command,
                TableLockBusyError.describe(holders),
            )
        pause = _paused(pause, left)


def read_politely(
    engine: sa.Engine,
    read: Callable[[sa.Engine], T],
    *,
    lock_ms: int,
    what: str,
    command: str,
    wait_seconds: float,
) -> T:
    """``read(bounded)``: a command's reads before its attempts (a retirement's gates) on
    ``engine``'s pool, each of their lock waits bounded by ``lock_ms``
    (:func:`~unistatus.db.bounded_reads.bounded_reads`; an engine with no lock_timeout
    waited for ever behind a session holding a table they read ACCESS EXCLUSIVE).
    Kept waiting so, they are read again after a pause, for ``wait_seconds``; then a
    TableLockBusyError names those sessions (:func:`read_blockers`) and ``command``.
    Any other error is raised as it is."""
    bounded = bounded_reads(engine, lock_ms, statements=False)
    started, pause = time.monotonic(), FIRST_PAUSE_SECONDS
    while True:
        try:
            return read(bounded)
        except (sa.exc.OperationalError, StorageError) as exc:
            if not _a_lock_wait(exc):
                raise
        waited = time.monotonic() - started
        left = wait_seconds - waited
        if left <= 0:
            with engine.connect() as conn:
                holders = read_blockers(conn)
            raise TableLockBusyError(what, waited, holders, command)
        pause = _paused(pause, left)


def _paused(pause: float, left: float) -> float:
    """Sleep about ``pause`` (jitter: half to one and a half times it), at most ``left``;
    the next pause (doubled, up to :data:`LONGEST_PAUSE_SECONDS`)."""
    time.sleep(min(left, pause * random.uniform(0.5, 1.5)))
    return min(pause * 2, LONGEST_PAUSE_SECONDS)


def _a_lock_wait(exc: BaseException) -> bool:
    """Whether ``exc`` is a lock wait given up (or a deadlock), also when a read said it
    as a StorageError (the legacy tables reflected; the archive's verification, which
    raises it ``from None``: the error it replaced is still its context): tried again,
    not raised."""
    if isinstance(exc, sa.exc.OperationalError):
        cause: BaseException | None = exc
    else:
        cause = exc.__cause__ or exc.__context__
    return isinstance(cause, sa.exc.OperationalError) and retry_reason(cause) in RETRIED


def _look(
    engine: sa.Engine,
    changes: Callable[[sa.Connection], Changes],
    first_seen: dict[str, float],
    lock_ms: int,
) -> tuple[list[dict[str, Any]], bool, int]:
    """The holders now; whether the tables are busy past an attempt (one of the holders
    is a long transaction, or the look's own reads waited ``lock_ms`` for a lock: no
    attempt); and the lock timeout an attempt needs so that an autovacuum holding a
    table is cancelled (0: no autovacuum in the way)."""
    with engine.connect() as conn:
        # Whatever the engine's lock_timeout (none, or longer than an attempt's).
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(lock_ms)}")
        try:
            holders = table_holders(conn, changes(conn))
        except (sa.exc.OperationalError, StorageError) as exc:
            if not _a_lock_wait(exc):
                raise
            conn.rollback()
            holders, kept_waiting = read_blockers(conn), True
        else:
            kept_waiting = False
        # The server cancels an autovacuum for a lock queued behind it deadlock_timeout.
        least = deadlock_timeout_ms(conn) * 3 // 2 if any(h["autovacuum"] for h in holders) else 0
    now = time.monotonic()
    for h in holders:
        first_seen.setdefault(h["transaction"], now)
    stuck = kept_waiting or any(
        _age(h, first_seen, now) >= LONG_SECONDS for h in holders if not h["autovacuum"]
    )
    return holders, stuck, least


def _age(holder: dict[str, Any], first_seen: dict[str, float], now: float) -> float:
    """How long a holder's transaction has been open: from pg_stat_activity, else (another
    role's session, a prepared transaction) at least as long as it has been seen."""
    return max(holder["open_seconds"] or 0.0, now - first_seen[holder["transaction"]])


# A relation lock's table as SQL names it (an advisory lock's: NULL).
_RELATION = sa.literal_column("pg_catalog.pg_locks.relation::regclass::text", sa.Text)


# The table lock modes a SHARE ROW EXCLUSIVE lock waits for (every writer's and more);
# an ACCESS EXCLUSIVE one waits for any.
_SHARE_ROW_CONFLICTS = (
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)


def table_holders(conn: sa.Connection, changes: Changes) -> list[dict[str, Any]]:
    """The other sessions of this database (and prepared transactions) holding a lock on
    one of the tables of ``changes`` that conflicts with the one taken there, longest-open
    transaction first: pid, ``transaction`` (its virtual transaction id),
    application_name, state, open_seconds (None: unknown), ``locks`` (e.g.
    "AccessShareLock on cashouts"), ``autovacuum``."""
    if not changes.exclusive and not changes.share_row and not changes.advisory:
        return []
    L = PG_LOCKS

    def among(names: Sequence[str]) -> sa.ColumnElement[bool]:
        return L.c.relation.in_([sa.func.to_regclass(n) for n in names])

    def advisory(key: int) -> sa.ColumnElement[bool]:
        return sa.and_(
            L.c.locktype == "advisory",
            L.c.objsubid == 1,  # a bigint key's, split in two
            sa.cast(L.c.classid, sa.BigInteger) == (key >> 32) & 0xFFFFFFFF,
            sa.cast(L.c.objid, sa.BigInteger) == key & 0xFFFFFFFF,
        )

    doing = {key: said for key, said in changes.advisory}
    rel = (
        sa.case(
            *((advisory(key), sa.literal(said)) for key, said in doing.items()), else_=_RELATION
        )
        if doing
        else _RELATION
    )
    conflicting = sa.or_(
        *(advisory(key) for key in doing),
        among(changes.exclusive) if changes.exclusive else sa.false(),
        sa.and_(among(changes.share_row), L.c.mode.in_(_SHARE_ROW_CONFLICTS))
        if changes.share_row
        else sa.false(),
    )
    return _holders(conn, conflicting, rel)


def read_blockers(conn: sa.Connection) -> list[dict[str, Any]]:
    """The other sessions of this database (and prepared transactions) holding one of its
    tables ACCESS EXCLUSIVE, or queued for that (a read waits behind the request too),
    the one lock a read waits for (a look kept waiting), as :func:`table_holders` gives
    them; a queued request's lock is said as one. A temporary table's, or one a session
    is creating (never in a look's way), is none of them."""
    L = PG_LOCKS
    # A table a read may wait for: one it sees (a table created in a transaction not yet
    # committed is in no one else's way), not temporary.
    shared = sa.select(PG_CLASS.c.oid).where(PG_CLASS.c.relpersistence != "t")
    exclusive = sa.and_(
        L.c.locktype == "relation",
        L.c.mode == "AccessExclusiveLock",
        L.c.relation.in_(shared.scalar_subquery()),
    )
    return _holders(conn, exclusive, _RELATION, queued_too=True)


def lock_holders(engine: sa.Engine) -> str | None:
    """Who holds a table ACCESS EXCLUSIVE, or is queued for that (:func:`read_blockers`),
    in one line, read on a connection of its own: for the message of a statement given
    up on a lock timeout. None: no one so (its wait was for another lock: a row's, an
    advisory one) or they could not be read."""
    try:
        with engine.connect() as conn:
            holders = read_blockers(conn)
    except (sa.exc.DBAPIError, StorageError):
        return None
    return TableLockBusyError.describe(holders) if holders else None


def _holders(
    conn: sa.Connection,
    conflicting: sa.ColumnElement[bool],
    rel: sa.ColumnElement[Any],
    *,
    queued_too: bool = False,
) -> list[dict[str, Any]]:
    """The granted locks (``queued_too``: and the requests waiting) that are
    ``conflicting``, by transaction (``rel``: how a lock names what it is on),
    longest-open first: :func:`table_holders`."""
    L, A = PG_LOCKS, PG_STAT_ACTIVITY
    # Statistics are a snapshot taken at a transaction's first read: cleared, so each
    # look sees the sessions as they are now.
    conn.execute(sa.select(sa.func.pg_stat_clear_snapshot()))
    here = this_database()
    q = (
        sa.select(
            L.c.pid,
            L.c.virtualtransaction,
            A.c.application_name,
            A.c.state,
            A.c.backend_type,
            # statement_timestamp(): now() is this transaction's start, older than theirs.
            sa.func.extract("epoch", sa.func.statement_timestamp() - A.c.xact_start).label(
                "open_seconds"
            ),
            L.c.mode,
            L.c.locktype,
            L.c.granted,
            rel.label("rel"),
        )
        .select_from(L.outerjoin(A, A.c.pid == L.c.pid))
        .where(
            L.c.database == here,
            L.c.locktype.in_(("relation", "advisory")),
            sa.true() if queued_too else L.c.granted,
            # A prepared transaction's locks have no pid: they block all the same.
            L.c.pid.is_distinct_from(sa.func.pg_backend_pid()),
            conflicting,
        )
        .order_by(sa.literal_column("open_seconds").desc().nulls_last(), L.c.pid, "rel")
    )
    found: dict[str, dict[str, Any]] = {}
    for row in conn.execute(q):
        vxid = str(row.virtualtransaction)
        h = found.setdefault(
            vxid,
            {
                "pid": row.pid,
                "transaction": vxid,
                "application_name": row.application_name or "",
                "state": row.state or ("prepared" if row.pid is None else "unknown"),
                "open_seconds": None
                if row.open_seconds is None
                else round(float(row.open_seconds), 1),
                "locks": [],
                "autovacuum": row.backend_type == "autovacuum worker",
            },
        )
        lock = row.rel if row.locktype == "advisory" else f"{row.mode} on {row.rel}"
        h["locks"].append(lock if row.granted else f"a queued request for {lock}")
    return list(found.values())
