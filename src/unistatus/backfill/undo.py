"""Undo a backfill (phase 2 rollback): remove the unified rows only it wrote.

A unified row created by the backfill has ``origin='backfill'`` and ``version=1``; the
adapter bumps ``version`` on every write, so such a row has not been touched by live
traffic since. Rows the adapter created or updated are kept. The delete runs in
bounded batches and re-checks the condition in its own WHERE, so a concurrent adapter
write to a row either lands first (row kept) or after (row already gone from unified,
recreated by the adapter's upsert from legacy).

Only where legacy is the authoritative side (LEGACY_ONLY, DUAL_WRITE_LEGACY_PRIMARY):
in a mode that reads unified, an untouched backfilled row is the transaction's status
of record (after `retire legacy-columns`, its only copy). It was deleted there too; a
system in such a mode is refused now, each batch holding the system's mode lock and
reading its mode (a switch waits for the batch, and the next one sees it).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.backfill.progress import progress
from unistatus.backfill.statements import ORIGIN
from unistatus.config import Settings
from unistatus.db.control import write_value
from unistatus.db.dialect import DialectOps, ops_for
from unistatus.db.mode_reads import read_mode
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_chunks as CH
from unistatus.db.tables_backfill import backfill_jobs as J
from unistatus.db.tables_backfill import backfill_quarantine as Q
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import InputError, ModeError, StorageError

DELETE_BATCH = 10_000
CONTROL_KEY = "backfill_undo"  # the control log entry of each undo (actor, reason, counts)


def undo(
    engine: sa.Engine,
    settings: Settings,
    *,
    systems: list[LegacySystemType] | None = None,
    dry_run: bool = False,
    actor: str = "backfill",
    reason: str | None = None,
) -> dict[str, Any]:
    """Delete untouched backfilled rows and reset the backfill state; report counts.

    ``dry_run`` counts what would be removed and kept, and changes nothing. A real run
    is recorded in the control log (key ``backfill_undo``) with ``actor`` and
    ``reason`` (both required).
    """
    chosen = systems or list(LegacySystemType)
    if not dry_run and (not reason or not reason.strip()):
        raise InputError("a backfill undo needs a reason (--reason); it is recorded")
    if not dry_run and (not actor or not actor.strip()):
        raise InputError("an actor is required")
    if not dry_run:
        reason = check_reason(reason)
        actor = check_actor(actor)
    with engine.connect() as conn:
        for system in chosen:
            _refuse_where_unified_is_read(read_mode(conn, system), system)
    current = progress(engine, settings)
    busy = [s.value for s in chosen if current[s.value]["state"] in ("running", "paused")]
    if busy:
        raise ModeError(
            f"a backfill of {', '.join(busy)} is running or paused; let it finish (or stop "
            "its workers: state turns 'stalled' a minute after the last batch) before undoing"
        )
    if dry_run:
        return _plan(engine, chosen)
    assert reason is not None
    ops = ops_for(engine)
    untouched = sa.and_(U.c.origin == ORIGIN, U.c.version == 1)
    per_system: dict[str, dict[str, int]] = {}
    try:
        for system in chosen:
            mine = U.c.legacy_system == system.value
            removed = 0
            while True:
                ids = sa.select(U.c.id).where(mine, untouched).limit(DELETE_BATCH)
                with ops.write_transaction() as conn:
                    ops.mode_shared_lock(conn, system)  # no switch between read and delete
                    mode = read_mode(conn, system)
                    if mode.reads_unified:  # switched since the first look
                        break
                    n = conn.execute(
                        sa.delete(U).where(U.c.id.in_(ids.scalar_subquery()), mine, untouched)
                    ).rowcount
                removed += n
                if n < DELETE_BATCH:
                    break
            if mode.reads_unified:
                _stopped_by_a_switch(ops, system, mode, removed, per_system)
            with ops.write_transaction() as conn:
                kept_touched = conn.execute(
                    sa.select(sa.func.count()).where(mine, U.c.origin == ORIGIN)
                ).scalar_one()
                kept_live = conn.execute(
                    sa.select(sa.func.count()).where(mine, U.c.origin != ORIGIN)
                ).scalar_one()
                conn.execute(sa.delete(CH).where(CH.c.system == system.value))
                conn.execute(sa.delete(J).where(J.c.system == system.value))
                cleared = conn.execute(sa.delete(Q).where(Q.c.system == system.value)).rowcount
            per_system[system.value] = {
                "removed": removed,
                "kept_touched_since": int(kept_touched),
                "kept_live_rows": int(kept_live),
                "quarantine_cleared": cleared,
            }
    except sa.exc.OperationalError as exc:
        raise StorageError(
            f"backfill undo interrupted: {exc.orig}; rerun it to finish (it is idempotent)"
        ) from None
    result = _totals(per_system, dry_run=False)
    with ops.write_transaction() as conn:
        write_value(
            conn,
            CONTROL_KEY,
            f"removed {result['removed']} backfilled rows of {', '.join(s.value for s in chosen)}",
            actor=actor.strip(),
            reason=reason.strip(),
            metadata={k: v for k, v in result.items() if k != "dry_run"},
        )
    return result


def _stopped_by_a_switch(
    ops: DialectOps,
    system: LegacySystemType,
    mode: DualWriteMode,
    removed: int,
    done: dict[str, dict[str, int]],
) -> None:
    """ModeError: ``system`` entered ``mode`` (which reads unified) between two batches.
    The rows deleted before were deleted while legacy was authoritative (nothing lost);
    its backfill's progress is reset so that `unistatus backfill` copies them again."""
    if removed:
        with ops.write_transaction() as conn:
            conn.execute(sa.delete(CH).where(CH.c.system == system.value))
            conn.execute(sa.delete(J).where(J.c.system == system.value))
    before = sum(s["removed"] for s in done.values())
    gone = removed + before
    said = (
        f"{gone:,} backfilled rows were deleted before it (while legacy was authoritative: "
        f"nothing lost; {system.value.lower()}'s backfill progress is reset, `unistatus "
        "backfill` copies them again)"
        if gone
        else "nothing was deleted"
    )
    raise ModeError(
        f"backfill undo stopped: {system.value.lower()} entered {mode.value} meanwhile, "
        f"where its unified rows are the authoritative ones; {said}"
    )


def _refuse_where_unified_is_read(mode: DualWriteMode, system: LegacySystemType) -> None:
    if mode.reads_unified:
        raise ModeError(
            f"cannot undo the backfill of {system.value.lower()}: {system.value.lower()} is in "
            f"{mode.value}, where its unified rows are the authoritative ones (after "
            "`retire legacy-columns`, the only copy of their statuses): deleting them would "
            "lose them. An undo belongs to rolling back from phase 2: roll the system back "
            "first (`unistatus phase rollback`, to DUAL_WRITE_LEGACY_PRIMARY), or leave the "
            "rows; nothing was deleted"
        )


def _totals(per_system: dict[str, dict[str, int]], *, dry_run: bool) -> dict[str, Any]:
    totals = {
        key: sum(s[key] for s in per_system.values())
        for key in ("removed", "kept_touched_since", "kept_live_rows", "quarantine_cleared")
    }
    return {**totals, "systems": per_system, "dry_run": dry_run}


def _count(conn: sa.Connection, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()
    )


def _plan(engine: sa.Engine, chosen: list[LegacySystemType]) -> dict[str, Any]:
    """What :func:`undo` would remove and keep now (one read; nothing written)."""
    untouched = sa.and_(U.c.origin == ORIGIN, U.c.version == 1)
    per_system: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for system in chosen:
            mine = U.c.legacy_system == system.value
            removed = _count(conn, U, mine, untouched)
            per_system[system.value] = {
                "removed": removed,
                "kept_touched_since": _count(conn, U, mine, U.c.origin == ORIGIN) - removed,
                "kept_live_rows": _count(conn, U, mine, U.c.origin != ORIGIN),
                "quarantine_cleared": _count(conn, Q, Q.c.system == system.value),
            }
    return _totals(per_system, dry_run=True)
