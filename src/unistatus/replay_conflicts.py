"""The replay's conflict list: changes made in UNIFIED_ONLY that legacy did not take.

The replay to legacy (:func:`unistatus.rollback.replay_pending`) writes a transaction's
legacy row only while it still holds the status the changes started from. Otherwise
nothing is overwritten: the changes are recorded here (:func:`record`, in the replay's
own transaction) and an operator decides, with a reason (:func:`resolve`):

- ``keep_legacy``: legacy keeps what it holds (e.g. a payout confirmed as SUCCESS while
  legacy-only); unified still shows the replayed status until ``unistatus repair``
  brings it back in line with legacy.
- ``apply``: write the replayed status to legacy after all, only if the legacy row
  still holds what it held when the conflict was recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings
from unistatus.control import read_mode
from unistatus.db.dialect import ops_for
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.tables_replay import replay_conflicts
from unistatus.errors import InputError, ModeError, StorageError
from unistatus.statuses import DualWriteMode, LegacySystemType

__all__ = [
    "CAUSES",
    "RESOLUTIONS",
    "ReplayConflict",
    "get_conflict",
    "list_conflicts",
    "open_conflict_count",
    "record",
    "resolve",
]

C = replay_conflicts
CAUSES = {
    "legacy_changed": "legacy no longer holds the status the change started from",
    "legacy_busy": "the legacy row stayed locked by another session for the whole replay",
    "legacy_missing": "the legacy row is gone",
}
RESOLUTIONS = ("keep_legacy", "apply")
RESOLVE_LOCK_MS = 5000


@dataclass(frozen=True)
class ReplayConflict:
    id: int
    transaction_id: str
    legacy_system: str | None
    legacy_id: int | None
    cause: str
    legacy_expected: str | None
    legacy_actual: str | None
    replay_status: str | None
    unified_status: str | None
    first_change_id: int
    last_change_id: int
    changes: int
    created_at: datetime | None
    created_by: str
    resolved_at: datetime | None
    resolution: str | None
    resolved_by: str | None
    resolution_reason: str | None

    @property
    def entity(self) -> str:
        if self.legacy_system and self.legacy_id is not None:
            return f"{self.legacy_system.lower()}:{self.legacy_id}"
        return self.transaction_id

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "entity": self.entity,
            "transaction_id": self.transaction_id,
            "legacy_system": self.legacy_system,
            "legacy_id": self.legacy_id,
            "cause": self.cause,
            "explanation": CAUSES.get(self.cause, self.cause),
            "legacy_expected": self.legacy_expected,
            "legacy_actual": self.legacy_actual,
            "replay_status": self.replay_status,
            "unified_status": self.unified_status,
            "first_change_id": self.first_change_id,
            "last_change_id": self.last_change_id,
            "changes": self.changes,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "created_by": self.created_by,
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "resolution": self.resolution,
            "resolved_by": self.resolved_by,
            "resolution_reason": self.resolution_reason,
        }


def _from_row(r: Any) -> ReplayConflict:
    return ReplayConflict(
        id=int(r.id),
        transaction_id=r.transaction_id,
        legacy_system=r.legacy_system,
        legacy_id=r.legacy_id,
        cause=r.cause,
        legacy_expected=r.legacy_expected,
        legacy_actual=r.legacy_actual,
        replay_status=r.replay_status,
        unified_status=r.unified_status,
        first_change_id=int(r.first_change_id),
        last_change_id=int(r.last_change_id),
        changes=int(r.changes),
        created_at=as_utc(r.created_at),
        created_by=r.created_by,
        resolved_at=as_utc(r.resolved_at),
        resolution=r.resolution,
        resolved_by=r.resolved_by,
        resolution_reason=r.resolution_reason,
    )


def record(
    conn: sa.Connection,
    *,
    transaction_id: str,
    legacy_system: str | None,
    legacy_id: int | None,
    cause: str,
    expected: str | None,
    actual: str | None,
    replay_status: str | None,
    unified_status: str | None,
    change_ids: list[int],
    actor: str,
    now: datetime,
) -> None:
    """Keep one transaction's unapplied changes (in the caller's transaction)."""
    if cause not in CAUSES:
        raise ValueError(f"unknown conflict cause {cause!r}")
    conn.execute(
        sa.insert(C).values(
            transaction_id=transaction_id,
            legacy_system=legacy_system,
            legacy_id=legacy_id,
            cause=cause,
            legacy_expected=expected,
            legacy_actual=actual,
            replay_status=replay_status,
            unified_status=unified_status,
            first_change_id=min(change_ids),
            last_change_id=max(change_ids),
            changes=len(change_ids),
            created_at=now,
            created_by=actor[:128],
        )
    )


def list_conflicts(
    engine: sa.Engine, *, include_resolved: bool = False, limit: int = 100
) -> list[ReplayConflict]:
    """Open conflicts (all with ``include_resolved``), oldest first."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InputError(f"limit must be a positive integer, got {limit!r}")
    q = sa.select(C).order_by(C.c.id).limit(limit)
    if not include_resolved:
        q = q.where(C.c.resolved_at.is_(None))
    try:
        with engine.connect() as conn:
            return [_from_row(r) for r in conn.execute(q).all()]
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot read the replay conflicts: {exc.orig}") from None


def open_conflict_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(C).where(C.c.resolved_at.is_(None))
            ).scalar_one()
        )


def get_conflict(engine: sa.Engine, conflict_id: int) -> ReplayConflict:
    with engine.connect() as conn:
        row = conn.execute(sa.select(C).where(C.c.id == conflict_id)).first()
    if row is None:
        raise InputError(f"no replay conflict #{conflict_id}: see `unistatus rollback conflicts`")
    return _from_row(row)


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
    if isinstance(conflict_id, bool) or not isinstance(conflict_id, int) or conflict_id < 1:
        raise InputError(f"a conflict id is a positive integer, got {conflict_id!r}")
    conflict = get_conflict(engine, conflict_id)
    if conflict.resolved_at is not None:
        raise InputError(
            f"replay conflict #{conflict_id} was already resolved ({conflict.resolution}) "
            f"by {conflict.resolved_by}"
        )
    tables = resolve_legacy_tables(engine, settings) if action == "apply" else {}
    ops = ops_for(engine)
    now = utcnow()
    try:
        with ops.write_transaction() as conn:
            ops.bound_statements(conn, RESOLVE_LOCK_MS * 2, RESOLVE_LOCK_MS)
            if action == "apply":
                ops.mode_shared_lock(conn)
                _apply(conn, conflict, tables, read_mode(conn), now)
            done = conn.execute(
                sa.update(C)
                .where(C.c.id == conflict_id, C.c.resolved_at.is_(None))
                .values(
                    resolved_at=now,
                    resolution=action,
                    resolved_by=actor.strip()[:128],
                    resolution_reason=reason.strip(),
                )
            ).rowcount
            if done != 1:
                raise InputError(f"replay conflict #{conflict_id} was resolved meanwhile")
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot resolve replay conflict #{conflict_id}: {exc.orig}") from None
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
    current = conn.execute(
        sa.select(lt.status).where(lt.id == conflict.legacy_id).with_for_update()
    ).first()
    if current is None:
        raise InputError(f"{conflict.entity}: the legacy row is gone; use --keep-legacy")
    if current[0] != conflict.legacy_actual:
        raise InputError(
            f"{conflict.entity} now holds {current[0]!r} in legacy, not {conflict.legacy_actual!r} "
            "as when the conflict was recorded: it changed since; look again and decide "
            "(--keep-legacy keeps it)"
        )
    conn.execute(
        sa.update(lt.table)
        .where(lt.id == conflict.legacy_id)
        .values({lt.status.key: conflict.replay_status, lt.updated_at.key: now})
    )
