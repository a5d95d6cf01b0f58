"""Rollback procedures: one step back per phase, and the emergency path to legacy.

Every rollback replays the changes recorded while legacy was frozen, the last batch in
the same transaction as the mode switch, so no write is lost. What each phase's step
back does and how the emergency path works: ``docs/rollback.md``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from unistatus.backfill import pause
from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.control import read_mode, write_value
from unistatus.db.dialect import DialectOps, is_retryable, ops_for
from unistatus.db.failures import describe, one_line
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.tables import pending_legacy_changes, status_history, unified_transactions
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import GateError, InputError, StorageError
from unistatus.migration.phases import (
    PHASES,
    ROLLBACK_KEY,
    PhaseChange,
    read_phase,
    write_phase,
)
from unistatus.migration.replay_conflicts import record as record_conflict
from unistatus.migration.retire import legacy_columns_dropped
from unistatus.migration.retire import undo_cleanup as undo

__all__ = [
    "DEFAULT_BATCH",
    "ROLLBACK_TARGET",
    "emergency_rollback",
    "pending_count",
    "replay_pending",
    "rollback_current_phase",
]

log = logging.getLogger("unistatus.migration.rollback")

P = pending_legacy_changes
U = unified_transactions
H = status_history
DEFAULT_BATCH = 1000
# phase -> the phase a one-step rollback lands in
ROLLBACK_TARGET = {1: 0, 2: 1, 3: 2, 4: 2}
BACKFILL_UNDO_NOTE = (
    "backfill workers paused; `unistatus backfill undo` removes the backfilled rows "
    "if the backfill must restart from scratch"
)

CONFLICTS_NOTE = (
    "{n} transaction(s) NOT replayed: legacy no longer held what the change started from "
    "(or stayed locked); nothing was overwritten. List them with `unistatus rollback "
    "conflicts`, decide each with `unistatus rollback resolve ID --keep-legacy|--apply "
    "--reason ...`"
)

Finish = Callable[[sa.Connection, dict[str, Any]], None]

COUNT_KEYS = (
    "replayed",
    "creates",
    "status_changes",
    "legacy_created",
    "legacy_updated",
    "conflicts",
    "conflicted_changes",
    "busy",
)
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


def pending_count(engine: sa.Engine) -> int:
    """Changes made while legacy was frozen that legacy has not seen yet."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(P).where(P.c.replayed_at.is_(None))
            ).scalar_one()
        )


def _restore_legacy_columns(
    engine: sa.Engine, settings: Settings, actor: str, reason: str
) -> dict[str, Any] | None:
    """Undo the retirement's column drop first: legacy must be writable to replay."""
    if not legacy_columns_dropped(engine, settings):
        return None
    log.warning("legacy status columns are retired: restoring them before the replay")
    return undo(engine, settings, actor=actor, reason=f"rollback out of phase 4: {reason}")


def _fetch_after(conn: sa.Connection, after: int, limit: int) -> list[Any]:
    """The oldest ``limit`` unreplayed changes above ``after`` (a primary-key range scan)."""
    return list(
        conn.execute(
            sa.select(P.c.id, P.c.transaction_id, P.c.kind, P.c.legacy_status, P.c.operation_id)
            .where(P.c.replayed_at.is_(None), P.c.id > after)
            .order_by(P.c.id)
            .limit(limit)
        ).all()
    )


def _fetch_held(conn: sa.Connection, held: set[str], upto: int) -> list[Any]:
    """The unreplayed changes of transactions whose legacy row was busy, in order."""
    if not held:
        return []
    return list(
        conn.execute(
            sa.select(P.c.id, P.c.transaction_id, P.c.kind, P.c.legacy_status, P.c.operation_id)
            .where(P.c.replayed_at.is_(None), P.c.id <= upto, P.c.transaction_id.in_(sorted(held)))
            .order_by(P.c.id)
        ).all()
    )


def _legacy_befores(conn: sa.Connection, firsts: dict[str, Any]) -> dict[str, str | None]:
    """The legacy status each transaction's first change here started from.

    The history row written with the change (same operation id) has it: in UNIFIED_ONLY
    it is the unified row's legacy image at the time, what legacy was expected to hold.
    """
    if not firsts:
        return {}
    rows = conn.execute(
        sa.select(H.c.transaction_id, H.c.operation_id, H.c.from_legacy_status).where(
            H.c.transaction_id.in_(sorted(firsts)),
            H.c.operation_id.in_(sorted({r.operation_id for r in firsts.values()})),
        )
    ).all()
    return {
        r.transaction_id: r.from_legacy_status
        for r in rows
        if firsts[r.transaction_id].operation_id == r.operation_id
    }


def _replay_rows(
    conn: sa.Connection,
    ops: DialectOps,
    tables: dict[LegacySystemType, LegacyTable],
    rows: list[Any],
    held: set[str],
    *,
    actor: str,
    busy_is_conflict: bool = False,
) -> dict[str, int]:
    """Apply these changes (in id order) where legacy holds what they started from.

    Per transaction: legacy already holds the target, nothing to write; legacy holds
    the status the first change started from, it is written; anything else (a final
    status written while legacy-only, a row gone) is never overwritten but recorded
    as a conflict. A legacy row locked elsewhere is skipped (``held``: its later
    changes wait too) and retried later, or recorded as a conflict when
    ``busy_is_conflict``. The caller holds the exclusive mode lock.
    """
    counts = dict.fromkeys(COUNT_KEYS, 0)
    by_tx: dict[str, list[Any]] = {}
    for r in rows:
        if r.transaction_id not in held:
            by_tx.setdefault(r.transaction_id, []).append(r)
    if not by_tx:
        return counts
    now = utcnow()
    unified = {
        u.id: u
        for u in conn.execute(
            sa.select(
                U.c.id, U.c.legacy_system, U.c.legacy_id, U.c.legacy_status, U.c.status
            ).where(U.c.id.in_(sorted(by_tx)))
        ).all()
    }
    # Each transaction's changes here chain: the first starts from its legacy "before",
    # the last leaves the value legacy must hold (later changes start from it).
    target = {tx: changes[-1].legacy_status for tx, changes in by_tx.items()}
    applied: list[str] = []
    creates = {
        tx
        for tx, changes in by_tx.items()
        if tx in unified
        and unified[tx].legacy_id is None
        and any(c.kind == "create" for c in changes)
    }
    if creates:
        counts["legacy_created"] = _create_legacy_rows(conn, tables, creates, target, now)
        applied += sorted(creates)
    befores = _legacy_befores(conn, {tx: changes[0] for tx, changes in by_tx.items()})
    by_system: dict[str, dict[int, str]] = defaultdict(dict)
    for tx in by_tx:
        u = unified.get(tx)
        if tx in creates or u is None or u.legacy_id is None:
            if tx not in creates:
                applied.append(tx)  # nothing in legacy to write (as before this change)
            continue
        by_system[u.legacy_system][int(u.legacy_id)] = tx
    conflicts: list[tuple[str, str, str | None]] = []  # (tx, cause, legacy value seen)
    for system_value, txs in by_system.items():
        lt = tables[LegacySystemType(system_value)]
        assert lt.status is not None
        ids = sorted(txs)
        query = sa.select(lt.id, lt.status).where(lt.id.in_(ids))
        got: dict[int, str | None] = {
            r[0]: r[1] for r in conn.execute(ops.lock_rows_skip_busy(query))
        }
        absent = [i for i in ids if i not in got]
        seen: dict[int, str | None] = {}
        if absent:
            # Locked elsewhere (busy) or gone: the committed value tells which.
            seen = {r[0]: r[1] for r in conn.execute(query.where(lt.id.in_(absent)))}
        updates: list[dict[str, Any]] = []
        for lid in ids:
            tx = txs[lid]
            if lid not in got:
                if lid not in seen:
                    conflicts.append((tx, "legacy_missing", None))
                elif busy_is_conflict:
                    conflicts.append((tx, "legacy_busy", seen[lid]))
                else:
                    held.add(tx)
                    counts["busy"] += 1
                continue
            actual = got[lid]
            if actual in (target[tx], unified[tx].legacy_status):
                # Already there, or legacy already holds unified's newest image (dual
                # writes ran after a hand switch out of UNIFIED_ONLY): nothing to write.
                applied.append(tx)
            elif tx in befores and actual == befores[tx]:
                updates.append({"lid": lid, "st": target[tx]})
                applied.append(tx)
            else:
                conflicts.append((tx, "legacy_changed", actual))
        if updates:
            conn.execute(
                sa.update(lt.table)
                .where(lt.id == sa.bindparam("lid"))
                .values({lt.status.key: sa.bindparam("st"), lt.updated_at.key: now}),
                updates,
            )
            counts["legacy_updated"] += len(updates)
    for tx, cause, actual in conflicts:
        u = unified[tx] if tx in unified else None
        record_conflict(
            conn,
            transaction_id=tx,
            legacy_system=u.legacy_system if u is not None else None,
            legacy_id=u.legacy_id if u is not None else None,
            cause=cause,
            expected=befores.get(tx),
            actual=actual,
            replay_status=target[tx],
            unified_status=u.status if u is not None else None,
            change_ids=[c.id for c in by_tx[tx]],
            actor=actor,
            now=now,
        )
        log.warning(
            "replay conflict (%s) on %s: legacy holds %r, the replay would write %r: kept "
            "for the operator (`unistatus rollback conflicts`)",
            cause,
            tx,
            actual,
            target[tx],
        )
    done = applied + [tx for tx, _, _ in conflicts]
    ids_done = [c.id for tx in done for c in by_tx[tx]]
    if ids_done:
        conn.execute(sa.update(P).where(P.c.id.in_(ids_done)).values(replayed_at=now))
    changes_applied = [c for tx in applied for c in by_tx[tx]]
    counts["replayed"] = len(changes_applied)
    counts["creates"] = sum(1 for c in changes_applied if c.kind == "create")
    counts["status_changes"] = counts["replayed"] - counts["creates"]
    counts["conflicts"] = len(conflicts)
    counts["conflicted_changes"] = sum(len(by_tx[tx]) for tx, _, _ in conflicts)
    return counts


def _insert_target(lt: LegacyTable) -> sa.Table:
    """The legacy table as SQLAlchemy sees a table it defined itself.

    A reflected id column carries its ``nextval(...)`` server default, and SQLAlchemy
    then inserts row by row to return ids in order; declared as a plain autoincrement
    key (same name and type, from the reflected Column), a page is one statement.
    """
    cols: list[sa.Column[Any] | None] = [
        lt.user_id,
        lt.amount,
        lt.currency,
        lt.status,
        lt.created_at,
        lt.updated_at,
    ]
    return sa.Table(
        lt.table.name,
        sa.MetaData(),
        sa.Column(lt.id.name, lt.id.type, key=lt.id.key, primary_key=True, autoincrement=True),
        *(sa.Column(c.name, c.type, key=c.key) for c in cols if c is not None),
        schema=lt.table.schema,
    )


def _create_legacy_rows(
    conn: sa.Connection,
    tables: dict[LegacySystemType, LegacyTable],
    creates: set[str],
    latest: dict[str, str | None],
    now: Any,
) -> int:
    """Legacy rows for transactions born in UNIFIED_ONLY; link them (the UTX id stays)."""
    born = conn.execute(
        sa.select(
            U.c.id,
            U.c.legacy_system,
            U.c.user_id,
            U.c.amount,
            U.c.currency,
            U.c.legacy_status,
            U.c.created_at,
        ).where(U.c.id.in_(sorted(creates)), U.c.legacy_id.is_(None))
    ).all()
    by_system: dict[str, list[Any]] = defaultdict(list)
    for r in born:
        by_system[r.legacy_system].append(r)
    created = 0
    for system_value, items in by_system.items():
        lt = tables[LegacySystemType(system_value)]
        assert lt.status is not None
        params = [
            {
                lt.user_id.key: r.user_id,
                lt.amount.key: r.amount,
                lt.currency.key: r.currency,
                lt.status.key: latest[r.id],
                lt.created_at.key: r.created_at,
                lt.updated_at.key: now,
            }
            for r in items
        ]
        target = _insert_target(lt)
        # insertmanyvalues: one statement per page, ids returned in parameter order.
        ids = (
            conn.execute(
                sa.insert(target).returning(target.c[lt.id.key], sort_by_parameter_order=True),
                params,
            )
            .scalars()
            .all()
        )
        conn.execute(
            sa.update(U)
            .where(U.c.id == sa.bindparam("utx"))
            .values(legacy_id=sa.bindparam("lid"), updated_at=now),
            [{"utx": r.id, "lid": lid} for r, lid in zip(items, ids, strict=True)],
        )
        created += len(ids)
    return created


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
) -> bool:
    """One transaction's share of the replay; True when nothing is left (lock held)."""
    if p.held:
        retry = _fetch_held(conn, p.held, p.after)
        p.held.clear()
        p.add(_replay_rows(conn, ops, tables, retry, p.held, actor=actor))
    while True:
        rows = _fetch_after(conn, p.after, batch_size)
        if rows:
            p.after = rows[-1].id
            p.batches += 1
        p.add(_replay_rows(conn, ops, tables, rows, p.held, actor=actor))
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
        p.add(_replay_rows(conn, ops, tables, still, p.held, actor=actor, busy_is_conflict=True))
    return True


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
) -> dict[str, Any]:
    """Replay every unreplayed UNIFIED_ONLY change to legacy, oldest first.

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
        "undo_cleanup": _restore_legacy_columns(engine, settings, actor, reason)
    }
    tables = resolve_legacy_tables(engine, settings)
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
                ops.mode_exclusive_lock(conn)
                done = _round(
                    conn,
                    ops,
                    tables,
                    attempt,
                    batch_size=batch_size,
                    drain_all=rounds > 3,
                    busy_retry_seconds=busy_retry_seconds,
                    actor=actor,
                )
                if done:
                    summary.update(attempt.totals, batches=attempt.batches)
                    summary["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
                    if finish is not None:
                        finish(conn, summary)
        except sa.exc.DBAPIError as exc:
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
            log.warning("replay round %s could not get a lock (%s): retrying", rounds, exc.orig)
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


def _pause_backfill(engine: sa.Engine, settings: Settings, actor: str, reason: str) -> str:
    pause(engine, actor=actor, reason=reason)
    return "backfill workers paused (they wait before their next batch)"


def _switch(
    engine: sa.Engine,
    settings: Settings,
    *,
    from_phase: int | None,
    to_phase: int,
    to_mode: DualWriteMode,
    actor: str,
    reason: str,
    extra: dict[str, Any],
) -> tuple[int, DualWriteMode, dict[str, Any]]:
    """Replay what legacy has not seen, then set phase and mode in the same transaction.

    ``from_phase=None`` (the emergency path) goes to ``to_phase`` from whatever phase
    holds under the lock: a concurrent ``phase advance`` cannot make it give up.
    Returns the phase and mode it left, and the replay's summary.
    """
    seen: dict[str, Any] = {}

    def finish(conn: sa.Connection, summary: dict[str, Any]) -> None:
        current = read_phase(conn)
        if from_phase is not None and current != from_phase:
            raise GateError("the phase changed during the rollback; check `phase status`")
        seen["from_phase"] = current
        seen["from_mode"] = read_mode(conn)
        meta = {
            **extra,
            "action": "rollback",
            "from_phase": current,
            "to_phase": to_phase,
            "from_mode": seen["from_mode"].value,
            "replay": _jsonable(summary),
        }
        write_phase(conn, to_phase, to_mode, actor=actor, reason=reason, metadata=meta)
        write_value(
            conn,
            ROLLBACK_KEY,
            f"phase {current} -> {to_phase}, {to_mode.value}",
            actor=actor,
            reason=reason,
            metadata=meta,
        )

    replay = replay_pending(engine, settings, finish=finish, actor=actor, reason=reason)
    return seen["from_phase"], seen["from_mode"], replay


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, int | float | str | bool | dict | None) else str(v)
        for k, v in summary.items()
    }


def rollback_current_phase(
    engine: sa.Engine, settings: Settings, *, actor: str, reason: str
) -> PhaseChange:
    """One step back from the current phase, by that phase's procedure."""
    if not reason or not reason.strip():
        raise InputError("a rollback needs a reason (--reason); it is recorded")
    if not actor or not actor.strip():
        raise InputError("an actor is required")
    reason = check_reason(reason)
    actor = check_actor(actor)
    with engine.connect() as conn:
        phase = read_phase(conn)
    if phase == 0:
        raise GateError("phase 0 (not started): there is nothing to roll back")
    to_phase = ROLLBACK_TARGET[phase]
    to_mode = PHASES[to_phase].mode
    notes: list[str] = []
    if phase == 2:
        notes.append(_pause_backfill(engine, settings, actor, reason))
        notes.append(BACKFILL_UNDO_NOTE)
    _, from_mode, replay = _switch(
        engine,
        settings,
        from_phase=phase,
        to_phase=to_phase,
        to_mode=to_mode,
        actor=actor,
        reason=reason.strip(),
        extra={"notes": notes},
    )
    if replay["replayed"]:
        notes.append(f"replayed {replay['replayed']} change(s) to legacy first")
    if replay["conflicts"]:
        notes.append(CONFLICTS_NOTE.format(n=replay["conflicts"]))
    if replay.get("undo_cleanup"):
        notes.append("legacy status columns restored")
    return PhaseChange(
        phase,
        to_phase,
        from_mode,
        to_mode,
        actor,
        reason.strip(),
        utcnow(),
        notes=notes,
        details={"replay": replay},
    )


def emergency_rollback(
    engine: sa.Engine, settings: Settings, *, actor: str, reason: str
) -> dict[str, Any]:
    """The fastest safe path to legacy: replay where legacy is stale, then LEGACY_ONLY."""
    if not reason or not reason.strip():
        raise InputError("an emergency rollback needs a reason; it is recorded")
    if not actor or not actor.strip():
        raise InputError("an actor is required")
    reason = check_reason(reason)
    actor = check_actor(actor)
    started = time.perf_counter()
    notes: list[str] = []
    # The phase is read under the exclusive lock, in the transaction that leaves it.
    phase, from_mode, replay = _switch(
        engine,
        settings,
        from_phase=None,
        to_phase=0,
        to_mode=DualWriteMode.LEGACY_ONLY,
        actor=actor,
        reason=reason.strip(),
        extra={"emergency": True},
    )
    if replay["conflicts"]:
        notes.append(CONFLICTS_NOTE.format(n=replay["conflicts"]))
    try:
        notes.append(_pause_backfill(engine, settings, actor, reason))
    except Exception as exc:  # the switch is done; a pause failure must not hide it
        log.exception("could not pause the backfill after the emergency rollback")
        notes.append(f"could not pause the backfill: {one_line(exc)}")
    notes.append(
        f"running adapters follow within {settings.mode_refresh_seconds:g} s; "
        "return with `unistatus phase advance` (gated, one phase at a time)"
    )
    return {
        "emergency": True,
        "from_phase": phase,
        "to_phase": 0,
        "from_mode": from_mode.value,
        "to_mode": DualWriteMode.LEGACY_ONLY.value,
        "actor": actor,
        "reason": reason.strip(),
        "replay": replay,
        "conflicts": replay["conflicts"],
        "notes": notes,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "at": utcnow().isoformat(),
    }
