"""Resolving a replay conflict: the operator's decision, with a reason.

- ``keep_legacy``: legacy keeps what it holds (e.g. a payout confirmed as SUCCESS while
  legacy was written alone), and unified is brought in line with it in the same
  transaction (a ``legacy_wins`` repair of that one transaction, audited in its history).
  A legacy row that is gone stays gone: the unified row is kept as it is, an orphan,
  as that repair leaves one (a money record ``check`` reports for an operator), and the
  decision goes into its history.
- ``apply``: write the replayed status to legacy after all, only if the legacy row
  still holds what it held when the conflict was recorded, and only in a mode that
  writes legacy.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa

from unistatus.adapter.rows import read_legacy_row
from unistatus.adapter.writes import history_values
from unistatus.config import Settings
from unistatus.db.dialect import ops_for
from unistatus.db.failures import storage_errors
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.mode_reads import read_mode
from unistatus.db.server_clock import database_now
from unistatus.db.tables import status_history, unified_transactions
from unistatus.db.tables_replay import replay_conflicts as C
from unistatus.domain.consistency import InconsistencyKind as K
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import InputError, ModeError, StorageError
from unistatus.migration.repair_entity import LegacyHeld, legacy_took, repair_in
from unistatus.migration.repair_plan import Strategy
from unistatus.migration.replay_conflicts import RESOLUTIONS, ReplayConflict, get_conflict

__all__ = ["resolve"]

RESOLVE_LOCK_MS = 5000


def resolve(
    engine: sa.Engine,
    settings: Settings,
    conflict_id: int,
    *,
    action: str,
    actor: str,
    reason: str,
) -> ReplayConflict:
    """Close a conflict: ``keep_legacy`` (write nothing) or ``apply`` (write legacy).

    ``apply`` writes the replayed status only while the legacy row still holds what it
    held when the conflict was recorded, and only in a mode that writes legacy.
    """
    if action not in RESOLUTIONS:
        raise InputError(f"unknown resolution {action!r}: one of {', '.join(RESOLUTIONS)}")
    if not reason or not reason.strip():
        raise InputError("resolving a replay conflict needs a reason (--reason); it is recorded")
    if not actor or not actor.strip():
        raise InputError("an actor is required")
    reason = check_reason(reason)
    actor = check_actor(actor)
    if isinstance(conflict_id, bool) or not isinstance(conflict_id, int) or conflict_id < 1:
        raise InputError(f"a conflict id is a positive integer, got {conflict_id!r}")
    conflict = get_conflict(engine, conflict_id)
    if conflict.resolved_at is not None:
        raise InputError(
            f"replay conflict #{conflict_id} was already resolved ({conflict.resolution}) "
            f"by {conflict.resolved_by}"
        )
    tables = resolve_legacy_tables(engine, settings)
    ops = ops_for(engine)
    with (
        storage_errors(f"cannot resolve replay conflict #{conflict_id}"),
        ops.write_transaction() as conn,
    ):
        ops.bound_statements(conn, RESOLVE_LOCK_MS * 2, RESOLVE_LOCK_MS)
        # What it stamps, on the database's clock (an operator's host minutes off
        # stamped legacy minutes off: newest_wins later judged by it).
        now = database_now(conn)
        system = LegacySystemType(conflict.legacy_system) if conflict.legacy_system else None
        # No switch of the system's mode (None: of any) between the decision and its write.
        ops.mode_shared_lock(conn, system)
        if action == "apply":
            mode = read_mode(conn, system) if system is not None else read_mode(conn)
            _apply(conn, conflict, tables, mode, now)
        done = conn.execute(
            sa.update(C)
            .where(C.c.id == conflict_id, C.c.resolved_at.is_(None))
            .values(
                resolved_at=now,
                resolution=action,
                resolved_by=actor,
                resolution_reason=reason,
            )
        ).rowcount
        if done != 1:
            raise InputError(f"replay conflict #{conflict_id} was resolved meanwhile")
        if action == "keep_legacy":
            _unified_follows_legacy(conn, engine, settings, tables, conflict, actor, reason, now)
    return get_conflict(engine, conflict_id)


def _apply(
    conn: sa.Connection,
    conflict: ReplayConflict,
    tables: dict[LegacySystemType, LegacyTable],
    mode: DualWriteMode,
    now: datetime,
) -> None:
    if not mode.writes_legacy:
        raise ModeError(
            f"legacy is frozen in {mode.value}: roll back first (`unistatus phase rollback` or "
            "`unistatus rollback --emergency`), then apply the conflict"
        )
    if conflict.legacy_system is None or conflict.legacy_id is None:
        raise InputError(f"{conflict.entity} has no legacy row to write; use --keep-legacy")
    lt = tables[LegacySystemType(conflict.legacy_system)]
    if lt.status is None:
        raise ModeError("the legacy status columns are retired: nothing to write to")
    current = read_legacy_row(conn, lt, conflict.legacy_id, lock=True)
    if current is None:
        raise InputError(f"{conflict.entity}: the legacy row is gone; use --keep-legacy")
    if current["status"] != conflict.legacy_actual:
        raise InputError(
            f"{conflict.entity} now holds {current['status']!r} in legacy, not "
            f"{conflict.legacy_actual!r} "
            "as when the conflict was recorded: it changed since; look again and decide "
            "(--keep-legacy keeps it)"
        )
    conn.execute(
        sa.update(lt.table)
        .where(lt.id == conflict.legacy_id)
        .values(
            {
                lt.status.key: lt.as_stored("status", conflict.replay_status),
                lt.updated_at.key: now,
            }
        )
    )
    try:
        legacy_took(conn, lt, conflict.legacy_id, conflict.replay_status)
    except LegacyHeld as held:
        raise InputError(
            f"{conflict.entity}: {held}: nothing written; --keep-legacy keeps legacy's"
        ) from None


def _unified_follows_legacy(
    conn: sa.Connection,
    engine: sa.Engine,
    settings: Settings,
    tables: dict[LegacySystemType, LegacyTable],
    conflict: ReplayConflict,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    """Unified takes legacy's status now, in the decision's own transaction: left to a
    later repair, a strategy that lets the newer side win would write the replayed
    status over the legacy one the operator just chose to keep. A create legacy never
    got (no legacy row): nothing to follow. A legacy row that is gone (deleted on
    purpose, say): nothing to follow either; the unified row is left as the repair
    leaves an orphan, and the decision recorded in its history."""
    if conflict.legacy_system is None or conflict.legacy_id is None:
        return
    report = repair_in(
        conn,
        engine,
        settings,
        tables,
        LegacySystemType(conflict.legacy_system),
        conflict.legacy_id,
        conflict.transaction_id,
        strategy=Strategy.LEGACY_WINS,
        actor=actor.strip(),
        reason=f"replay conflict #{conflict.id} kept legacy: {reason.strip()}",
    )
    if report.skipped == {K.ORPHAN_UNIFIED.value: 1} and not report.failed:
        _orphan_kept(conn, conflict, actor.strip(), reason.strip(), now)
        return
    if report.failed or report.skipped:
        raise StorageError(
            f"replay conflict #{conflict.id}: unified could not follow legacy "
            f"({report.errors or report.skipped}); nothing was changed"
        )


def _orphan_kept(
    conn: sa.Connection, conflict: ReplayConflict, actor: str, reason: str, now: datetime
) -> None:
    """The unified row of a legacy row that is gone, kept as it is (the repair's lock
    on it still held): one history row says who decided it and why."""
    U = unified_transactions
    assert conflict.legacy_system is not None
    system = LegacySystemType(conflict.legacy_system)
    status = conn.execute(
        sa.select(U.c.status).where(U.c.id == conflict.transaction_id)
    ).scalar_one()
    conn.execute(
        sa.insert(status_history).values(
            history_values(
                transaction_id=conflict.transaction_id,
                legacy_system=system.value,
                legacy_id=conflict.legacy_id,
                from_status=status,
                to_status=status,
                from_legacy_status=None,
                to_legacy_status=None,  # no legacy row, as a captured DELETE records it
                reason=(
                    f"replay conflict #{conflict.id} kept legacy: the legacy row is gone, the "
                    f"unified row is kept as an orphan; {reason}"
                ),
                triggered_by="rollback resolve",
                meta={
                    "replay_conflict": conflict.id,
                    "cause": conflict.cause,
                    "resolution": "keep_legacy",
                    "actor": actor,
                    "reason": reason,
                    "legacy": None,
                    "unified": K.ORPHAN_UNIFIED.value,
                    "replay_status": conflict.replay_status,
                    "changes": conflict.changes,
                },
                operation_id=str(uuid.uuid4()),
                mode=read_mode(conn, system).value,
                override=False,
                created_at=now,
            )
        )
    )
