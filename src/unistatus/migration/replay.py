"""The replay of pending changes to legacy: rounds, batches, lock bounds and retries.

Changes made in UNIFIED_ONLY wait in ``unistatus_pending_legacy``, and so do, once a
round carries them there, the writes acknowledged in DUAL_WRITE_UNIFIED_PRIMARY whose
legacy side the database refused (queued for repair); :func:`replay_pending`
applies them oldest first (each batch by :mod:`unistatus.migration.replay_apply`) under the
exclusive mode lock, the last batch in the same transaction as the caller's ``finish``
(the rollbacks' mode switch, :mod:`unistatus.migration.rollback`). See ``docs/rollback.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.dialect import DialectOps, ops_for
from unistatus.db.failures import describe, read_only_refusal
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.retry import is_read_only, is_retryable
from unistatus.db.server_clock import clock_of
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, ModeLockBusyError, StorageError
from unistatus.migration.repair_queue import carry_to_replay
from unistatus.migration.replay_apply import COUNT_KEYS, replay_rows
from unistatus.migration.retire import legacy_columns_dropped
from unistatus.migration.retire import undo_cleanup as undo

__all__ = [
    "DEFAULT_BATCH",
    "pending_count",
    "replay_pending",
]

log = logging.getLogger("unistatus.migration.replay")

P = pending_legacy_changes
DEFAULT_BATCH = 1000

Finish = Callable[[sa.Connection, dict[str, Any]], None]

# The replay holds the exclusive mode lock (every writer waits on it): nothing it runs
# may wait long. A lock not granted within LOCK_TIMEOUT_MS ends the round (rolled back,
# retried); the server ends the session if its client dies or idles (see
# DialectOps.bound_exclusive), so a killed rollback cannot keep the lock.
LOCK_TIMEOUT_MS = 2000
STATEMENT_TIMEOUT_MS = 60_000
IDLE_TIMEOUT_MS = 10_000
# A legacy row locked elsewhere is retried this long, then kept as a conflict.
BUSY_RETRY_SECONDS = 3.0
# Rounds that cannot get their locks are retried this long, then the replay fails.
LOCK_WAIT_SECONDS = 30.0
RETRY_PAUSE_SECONDS = 0.1


def pending_count(engine: sa.Engine, system: LegacySystemType | None = None) -> int:
    """Changes made while legacy was frozen that legacy has not seen yet (of ``system``'s
    transactions; None: of every system's)."""
    with engine.connect() as conn:
        q = _of_system(sa.select(sa.func.count()).select_from(P), system)
        return int(conn.execute(q.where(P.c.replayed_at.is_(None))).scalar_one())


def _of_system(q: sa.Select[Any], system: LegacySystemType | None) -> sa.Select[Any]:
    """``q`` over pending changes, restricted to those of ``system``'s transactions."""
    if system is None:
        return q
    U = unified_transactions
    return q.join(U, U.c.id == P.c.transaction_id).where(U.c.legacy_system == system.value)


def _restore_legacy_columns(
    engine: sa.Engine, settings: Settings, actor: str, reason: str
) -> dict[str, Any] | None:
    """Undo the retirement's column drop first: legacy must be writable to replay."""
    if not legacy_columns_dropped(engine, settings):
        return None
    log.warning("legacy status columns are retired: restoring them before the replay")
    return undo(engine, settings, actor=actor, reason=f"rollback out of phase 4: {reason}")


_CHANGE = (P.c.id, P.c.transaction_id, P.c.kind, P.c.legacy_status, P.c.operation_id)


def _fetch_after(
    conn: sa.Connection, after: int, limit: int, system: LegacySystemType | None
) -> list[Any]:
    """The oldest ``limit`` unreplayed changes above ``after`` (a primary-key range scan),
    of ``system``'s transactions (None: every system's)."""
    q = _of_system(sa.select(*_CHANGE).select_from(P), system)
    return list(
        conn.execute(
            q.where(P.c.replayed_at.is_(None), P.c.id > after).order_by(P.c.id).limit(limit)
        ).all()
    )


def _fetch_held(conn: sa.Connection, held: set[str], upto: int) -> list[Any]:
    """The unreplayed changes of transactions whose legacy row was busy, in order."""
    if not held:
        return []
    return list(
        conn.execute(
            sa.select(*_CHANGE)
            .where(P.c.replayed_at.is_(None), P.c.id <= upto, P.c.transaction_id.in_(sorted(held)))
            .order_by(P.c.id)
        ).all()
    )


@dataclass
class _Progress:
    """Where the replay is: committed with each round, discarded with a failed one."""

    after: int = 0
    batches: int = 0
    held: set[str] = field(default_factory=set)
    busy_since: float | None = None
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))

    def copy(self) -> _Progress:
        return _Progress(
            self.after, self.batches, set(self.held), self.busy_since, dict(self.totals)
        )

    def add(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.totals[k] = self.totals.get(k, 0) + v


def _round(
    conn: sa.Connection,
    ops: DialectOps,
    tables: dict[LegacySystemType, LegacyTable],
    p: _Progress,
    *,
    batch_size: int,
    drain_all: bool,
    busy_retry_seconds: float,
    actor: str,
    system: LegacySystemType | None,
) -> bool:
    """One transaction's share of the replay; True when nothing is left (lock held).

    First the acknowledged writes legacy lacks (a refused legacy side, queued for repair
    under ``primary_wins``) become pending changes: replayed like the rest."""
    p.add({"carried": carry_to_replay(conn, system)})
    if p.held:
        retry = _fetch_held(conn, p.held, p.after)
        p.held.clear()
        p.add(replay_rows(conn, ops, tables, retry, p.held, actor=actor))
    while True:
        rows = _fetch_after(conn, p.after, batch_size, system)
        if rows:
            p.after = rows[-1].id
            p.batches += 1
        p.add(replay_rows(conn, ops, tables, rows, p.held, actor=actor))
        if len(rows) < batch_size:
            break  # the lock is held: nothing new can have appeared
        if not drain_all:
            return False
    if p.held and p.busy_since is None:
        p.busy_since = time.monotonic()
    if p.held and time.monotonic() - (p.busy_since or 0.0) < busy_retry_seconds:
        return False
    if p.held:
        # Still locked elsewhere: kept for the operator rather than waited for.
        still = _fetch_held(conn, p.held, p.after)
        p.held.clear()
        p.add(replay_rows(conn, ops, tables, still, p.held, actor=actor, busy_is_conflict=True))
    return True


class _TablesOnDemand(dict[LegacySystemType, LegacyTable]):
    """The legacy tables the replay writes, each found when a change of its system
    comes: one with nothing to replay is never looked at. A table changed behind
    unistatus (a column renamed) blocked every way back to legacy, of every system,
    before anything was switched."""

    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        super().__init__()
        self._engine, self._settings = engine, settings

    def __missing__(self, system: LegacySystemType) -> LegacyTable:
        found = resolve_legacy_tables(self._engine, self._settings, systems=[system])
        self[system] = found[system]
        return found[system]


def replay_pending(
    engine: sa.Engine,
    settings: Settings,
    *,
    batch_size: int = DEFAULT_BATCH,
    finish: Finish | None = None,
    actor: str = "rollback",
    reason: str = "replay pending legacy changes",
    busy_retry_seconds: float = BUSY_RETRY_SECONDS,
    lock_wait_seconds: float = LOCK_WAIT_SECONDS,
    system: LegacySystemType | None = None,
) -> dict[str, Any]:
    """Replay every unreplayed UNIFIED_ONLY change to legacy, oldest first: of
    ``system``'s transactions only (under that system's exclusive mode lock: the other
    systems' writers go on), or of every system's (None).

    Each batch commits under the exclusive mode lock. The batch that leaves nothing
    pending also runs ``finish(conn, summary)`` (e.g. the mode switch) in its own
    transaction, so nothing can be written between the two. After a few rounds the
    remaining changes are drained in one transaction, so busy writers cannot starve it.

    Nothing waits unbounded while the mode lock is held: every statement runs under
    ``lock_timeout``/``statement_timeout`` (a round that cannot get a lock is rolled
    back and retried, for up to ``lock_wait_seconds``), legacy rows locked elsewhere
    are skipped and retried for ``busy_retry_seconds``, then kept as conflicts; a
    legacy row that no longer holds what a change started from is never overwritten
    (a conflict too, see :mod:`unistatus.migration.replay_conflicts`). ``summary["conflicts"]``
    says how many.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    actor, reason = check_actor(actor), check_reason(reason)
    started = time.perf_counter()
    summary: dict[str, Any] = {
        "undo_cleanup": _restore_legacy_columns(engine, settings, actor, reason),
        "system": system.value if system is not None else None,
    }
    tables = _TablesOnDemand(engine, settings)
    ops = ops_for(engine)
    progress = _Progress()
    rounds = 0
    give_up = time.monotonic() + lock_wait_seconds
    while True:
        rounds += 1
        attempt = progress.copy()
        try:
            with ops.write_transaction() as conn:
                ops.bound_exclusive(
                    conn,
                    statement_ms=STATEMENT_TIMEOUT_MS,
                    lock_ms=LOCK_TIMEOUT_MS,
                    idle_ms=IDLE_TIMEOUT_MS,
                )
                clock_of(engine).measure(conn)  # what it stamps, on the database's clock
                # Within the replay's own time for its locks, at least one round's
                # lock_timeout (then ModeLockBusyError, naming the holders).
                wait = max(give_up - time.monotonic(), LOCK_TIMEOUT_MS / 1000)
                try:
                    ops.mode_exclusive_lock(conn, system, wait_seconds=wait)
                except ModeLockBusyError as exc:
                    before = " (the rounds before it were)" if rounds > 1 else ""
                    raise ModeLockBusyError(
                        exc.what,
                        exc.waited,
                        exc.holders,
                        outcome=f"nothing of the unfinished round was written{before}",
                    ) from None
                done = _round(
                    conn,
                    ops,
                    tables,
                    attempt,
                    batch_size=batch_size,
                    drain_all=rounds > 3,
                    busy_retry_seconds=busy_retry_seconds,
                    actor=actor,
                    system=system,
                )
                if done:
                    summary.update(attempt.totals, batches=attempt.batches)
                    summary["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
                    if finish is not None:
                        finish(conn, summary)
        except sa.exc.DBAPIError as exc:
            if is_read_only(exc):  # a replica: no round could write, pending or not
                raise StorageError(read_only_refusal(exc)) from None
            if not is_retryable(exc):
                raise StorageError(
                    f"the replay failed ({describe(exc).splitlines()[0]}); nothing of the "
                    "unfinished round was written: fix the cause and run it again"
                ) from None
            if time.monotonic() >= give_up:
                raise StorageError(
                    f"the replay could not get its locks within {lock_wait_seconds:g} s "
                    f"({str(exc.orig).strip().splitlines()[0]}); nothing of the unfinished "
                    "round was written: run it again"
                ) from None
            said = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            log.warning("replay round %s could not get a lock (%s): retrying", rounds, said)
            time.sleep(RETRY_PAUSE_SECONDS)
            continue
        progress = attempt
        if done:
            break
        if progress.held:
            time.sleep(RETRY_PAUSE_SECONDS)  # give the lock holder a moment
    totals = progress.totals
    log.info(
        "replayed %s pending legacy changes in %s batches; %s conflict(s)",
        totals["replayed"],
        progress.batches,
        totals["conflicts"],
    )
    return summary
