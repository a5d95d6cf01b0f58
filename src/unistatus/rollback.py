"""Rollback procedures: one step back per phase, and the emergency path to legacy.

Per phase, as the strategy document lists them:

- from 1 (foundation): dual-write off -> phase 0, LEGACY_ONLY.
- from 2 (backfill): the backfill workers are paused (re-entering phase 2 resumes
  them), ``unistatus backfill undo`` is offered, dual-write is kept -> phase 1,
  DUAL_WRITE_LEGACY_PRIMARY.
- from 3 (unified primary): reads go back to legacy, dual-write kept -> phase 2,
  DUAL_WRITE_LEGACY_PRIMARY.
- from 4 (retirement): legacy status columns are restored if they were dropped, every
  change made while legacy was frozen is replayed to legacy, then legacy primary ->
  phase 2, DUAL_WRITE_LEGACY_PRIMARY (the backfill is complete; re-entering phase 3
  re-measures its gates).

**Zero lost writes.** In UNIFIED_ONLY the adapter records every change in
``unistatus_pending_legacy``. :func:`replay_pending` applies them in order, in batches,
each batch under the exclusive mode lock, and the last batch and the mode switch commit
in ONE transaction: no adapter write can commit between the last replayed change and
the new mode, and writers waiting on the lock retry under the new mode. Every rollback
goes through this path, so it is also safe when the mode was set by hand.

**Emergency** (:func:`emergency_rollback`) follows the document's "Switch to Legacy
System Only": it ends in LEGACY_ONLY (phase 0), which takes the unified side out of
every write path, whatever is wrong with it. Where legacy is stale (UNIFIED_ONLY, or
changes not yet replayed) the replay runs first, in the same way. Running adapters
re-read the mode within ``mode_refresh_seconds`` (1 s by default) and every write
re-checks it under the mode lock, so no restart is needed. Returning is ``phase
advance`` from 0, one gated step at a time; the unified side misses what was written
while legacy-only, which the into-3 gate (a full check, 100% consistent) catches until
a check and repair have run.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.control import read_mode, write_value
from unistatus.db.dialect import ops_for
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.errors import GateError, InputError
from unistatus.phases import PHASES, PhaseChange, read_phase, write_phase
from unistatus.statuses import DualWriteMode, LegacySystemType

__all__ = [
    "DEFAULT_BATCH",
    "ROLLBACK_TARGET",
    "emergency_rollback",
    "pending_count",
    "replay_pending",
    "rollback_current_phase",
]

log = logging.getLogger("unistatus.rollback")

P = pending_legacy_changes
U = unified_transactions
DEFAULT_BATCH = 1000
ROLLBACK_KEY = "last_rollback"
# phase -> the phase a one-step rollback lands in
ROLLBACK_TARGET = {1: 0, 2: 1, 3: 2, 4: 2}
BACKFILL_UNDO_NOTE = (
    "backfill workers paused; `unistatus backfill undo` removes the backfilled rows "
    "if the backfill must restart from scratch"
)

Finish = Callable[[sa.Connection, dict[str, Any]], None]


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
    from unistatus.retire import legacy_columns_dropped
    from unistatus.retire import undo_cleanup as undo

    if not legacy_columns_dropped(engine, settings):
        return None
    log.warning("legacy status columns are retired: restoring them before the replay")
    result = undo(engine, settings, actor=actor, reason=f"rollback out of phase 4: {reason}")
    return result if isinstance(result, dict) else {"restored": True, "result": str(result)}


def _replay_batch(
    conn: sa.Connection,
    tables: dict[LegacySystemType, LegacyTable],
    batch_size: int,
    after: int,
) -> dict[str, int]:
    """Apply the oldest ``batch_size`` unreplayed changes, in order (caller holds the lock).

    ``after``: every change up to this id is known replayed, so the scan starts there
    (a primary-key range scan, not a walk over everything already replayed).
    """
    rows = conn.execute(
        sa.select(P.c.id, P.c.transaction_id, P.c.kind, P.c.legacy_status)
        .where(P.c.replayed_at.is_(None), P.c.id > after)
        .order_by(P.c.id)
        .limit(batch_size)
    ).all()
    counts = {"replayed": 0, "creates": 0, "status_changes": 0, "legacy_created": 0}
    counts.update(legacy_updated=0, last_id=after)
    if not rows:
        return counts
    lo, hi = rows[0].id, rows[-1].id
    counts["last_id"] = hi
    now = utcnow()
    # Legacy must end with the transaction's newest legacy value. The unified row holds
    # it (``legacy_status``, written in the same transaction as each pending row), so
    # applying it is the same as applying the batch in order, and stays right even if
    # the mode was switched by hand and dual writes ran before this replay.
    latest: dict[str, str | None] = {}
    creates: set[str] = set()
    for r in rows:
        latest[r.transaction_id] = r.legacy_status
        if r.kind == "create":
            creates.add(r.transaction_id)
    counts["replayed"] = len(rows)
    counts["creates"] = len(creates)
    counts["status_changes"] = len(rows) - len(creates)
    if creates:
        counts["legacy_created"] = _create_legacy_rows(conn, tables, creates, latest, now)
    counts["legacy_updated"] = _update_legacy_statuses(conn, tables, latest, now)
    in_batch = sa.and_(P.c.id.between(lo, hi), P.c.replayed_at.is_(None))
    conn.execute(sa.update(P).where(in_batch).values(replayed_at=now))
    return counts


def _update_legacy_statuses(
    conn: sa.Connection,
    tables: dict[LegacySystemType, LegacyTable],
    latest: dict[str, str | None],
    now: Any,
) -> int:
    """Set each legacy row to the last legacy value of its transaction in the batch.

    One lookup of the batch's legacy ids, then one executemany UPDATE per system (by
    primary key), so a batch costs O(batch) however long the pending table is.
    """
    refs = conn.execute(
        sa.select(U.c.id, U.c.legacy_system, U.c.legacy_id, U.c.legacy_status).where(
            U.c.id.in_(sorted(latest)), U.c.legacy_id.is_not(None)
        )
    ).all()
    by_system: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in refs:
        value = r.legacy_status if r.legacy_status is not None else latest[r.id]
        by_system[r.legacy_system].append({"lid": r.legacy_id, "st": value})
    updated = 0
    for system_value, params in by_system.items():
        lt = tables[LegacySystemType(system_value)]
        assert lt.status is not None
        conn.execute(
            sa.update(lt.table)
            .where(lt.id == sa.bindparam("lid"))
            .values({lt.status.key: sa.bindparam("st"), lt.updated_at.key: now}),
            params,
        )
        updated += len(params)
    return updated


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
                lt.status.key: r.legacy_status if r.legacy_status is not None else latest[r.id],
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


def replay_pending(
    engine: sa.Engine,
    settings: Settings,
    *,
    batch_size: int = DEFAULT_BATCH,
    finish: Finish | None = None,
    actor: str = "rollback",
    reason: str = "replay pending legacy changes",
) -> dict[str, Any]:
    """Replay every unreplayed UNIFIED_ONLY change to legacy, oldest first.

    Each batch commits under the exclusive mode lock. The batch that leaves nothing
    pending also runs ``finish(conn, summary)`` (e.g. the mode switch) in its own
    transaction, so nothing can be written between the two. After a few rounds the
    remaining changes are drained in one transaction, so busy writers cannot starve it.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    started = time.perf_counter()
    summary: dict[str, Any] = {
        "undo_cleanup": _restore_legacy_columns(engine, settings, actor, reason)
    }
    tables = resolve_legacy_tables(engine, settings)
    totals = {"replayed": 0, "creates": 0, "status_changes": 0}
    totals.update(legacy_created=0, legacy_updated=0)
    ops = ops_for(engine)
    batches = 0
    rounds = 0
    after = 0
    done = False
    while not done:
        rounds += 1
        drain_all = rounds > 3
        with ops.write_transaction() as conn:
            ops.mode_exclusive_lock(conn)
            while True:
                counts = _replay_batch(conn, tables, batch_size, after)
                after = counts.pop("last_id")
                batches += 1 if counts["replayed"] else 0
                for k, v in counts.items():
                    totals[k] += v
                if counts["replayed"] < batch_size:
                    done = True  # the lock is held: nothing new can have appeared
                    break
                if not drain_all:
                    break
            if done:
                summary.update(totals, batches=batches)
                summary["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
                if finish is not None:
                    finish(conn, summary)
    log.info("replayed %s pending legacy changes in %s batches", totals["replayed"], batches)
    return summary


def _pause_backfill(engine: sa.Engine, settings: Settings, actor: str, reason: str) -> str:
    from unistatus.backfill import pause

    pause(engine, actor=actor, reason=reason)
    return "backfill workers paused (they wait before their next batch)"


def _switch(
    engine: sa.Engine,
    settings: Settings,
    *,
    from_phase: int,
    to_phase: int,
    to_mode: DualWriteMode,
    actor: str,
    reason: str,
    extra: dict[str, Any],
) -> tuple[DualWriteMode, dict[str, Any]]:
    """Replay what legacy has not seen, then set phase and mode in the same transaction."""
    seen: dict[str, Any] = {}

    def finish(conn: sa.Connection, summary: dict[str, Any]) -> None:
        if read_phase(conn) != from_phase:
            raise GateError("the phase changed during the rollback; check `phase status`")
        seen["from_mode"] = read_mode(conn)
        meta = {
            **extra,
            "action": "rollback",
            "from_phase": from_phase,
            "to_phase": to_phase,
            "from_mode": seen["from_mode"].value,
            "replay": _jsonable(summary),
        }
        write_phase(conn, to_phase, to_mode, actor=actor, reason=reason, metadata=meta)
        write_value(
            conn,
            ROLLBACK_KEY,
            f"phase {from_phase} -> {to_phase}, {to_mode.value}",
            actor=actor,
            reason=reason,
            metadata=meta,
        )

    replay = replay_pending(engine, settings, finish=finish, actor=actor, reason=reason)
    return seen["from_mode"], replay


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
    from_mode, replay = _switch(
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
    started = time.perf_counter()
    with engine.connect() as conn:
        phase = read_phase(conn)
    notes: list[str] = []
    from_mode, replay = _switch(
        engine,
        settings,
        from_phase=phase,
        to_phase=0,
        to_mode=DualWriteMode.LEGACY_ONLY,
        actor=actor,
        reason=reason.strip(),
        extra={"emergency": True},
    )
    try:
        notes.append(_pause_backfill(engine, settings, actor, reason))
    except Exception as exc:  # the switch is done; a pause failure must not hide it
        log.exception("could not pause the backfill after the emergency rollback")
        notes.append(f"could not pause the backfill: {exc}")
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
        "notes": notes,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "at": utcnow().isoformat(),
    }
