"""The replay's conflict list: changes made in UNIFIED_ONLY that legacy did not take.

The replay to legacy (:func:`unistatus.migration.replay.replay_pending`) writes a transaction's
legacy row only while it still holds the status the changes started from. Otherwise
nothing is overwritten: the changes are recorded here (:func:`record`, in the replay's
own transaction) and an operator decides each one with a reason
(:func:`unistatus.migration.replay_resolve.resolve`). Until then no repair strategy touches the
transaction (:func:`has_open_conflict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc
from unistatus.db.failures import storage_errors
from unistatus.db.tables import unified_transactions
from unistatus.db.tables_replay import replay_conflicts
from unistatus.domain.inputs import MAX_ACTOR_CHARS, check_text
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError

__all__ = [
    "CAUSES",
    "RESOLUTIONS",
    "ReplayConflict",
    "get_conflict",
    "has_open_conflict",
    "join",
    "list_conflicts",
    "open_conflicts",
    "open_conflict_count",
    "record",
]

C = replay_conflicts
CAUSES = {
    "legacy_changed": "legacy no longer holds the status the change started from",
    "legacy_busy": "the legacy row stayed locked by another session for the whole replay",
    "legacy_missing": "the legacy row is gone",
    "legacy_values_missing": (
        "the legacy row of a transaction born in UNIFIED_ONLY cannot be created: the table "
        "requires columns of its own that the create did not keep (legacy_values), or the "
        "kept values no longer fit it"
    ),
    "legacy_insert_refused": (
        "the database refused the legacy row of a transaction born in UNIFIED_ONLY"
    ),
    "legacy_update_refused": (
        "the database refused the legacy status the replay would write (a constraint or "
        "trigger of the application's, or a value its type lacks)"
    ),
}
RESOLUTIONS = ("keep_legacy", "apply")


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
    check_text("actor", actor, MAX_ACTOR_CHARS, one_line=True)
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
            created_by=actor,
        )
    )


def open_conflicts(conn: sa.Connection, transaction_ids: list[str]) -> dict[str, int]:
    """The open conflict (its id) of each of these transactions that has one."""
    if not transaction_ids:
        return {}
    rows = conn.execute(
        sa.select(C.c.transaction_id, C.c.id)
        .where(C.c.resolved_at.is_(None), C.c.transaction_id.in_(sorted(transaction_ids)))
        .order_by(C.c.id)
    ).all()
    return {r.transaction_id: int(r.id) for r in rows}  # several (recorded before): the newest


def join(
    conn: sa.Connection,
    conflict_id: int,
    *,
    replay_status: str | None,
    unified_status: str | None,
    change_ids: list[int],
) -> None:
    """More changes of a transaction already in conflict join it (in the caller's
    transaction): one conflict per transaction, holding all its unapplied changes, and
    the target of the newest of them (what ``apply`` writes), never an intermediate one.
    What legacy was expected to hold and was seen holding stay as first recorded."""
    first = sa.literal(min(change_ids), C.c.first_change_id.type)
    last = sa.literal(max(change_ids), C.c.last_change_id.type)
    newer = C.c.last_change_id < last
    target = sa.literal(replay_status, C.c.replay_status.type)
    conn.execute(
        sa.update(C)
        .where(C.c.id == conflict_id)
        .values(
            replay_status=sa.case((newer, target), else_=C.c.replay_status),
            unified_status=unified_status,
            first_change_id=sa.case(
                (C.c.first_change_id > first, first), else_=C.c.first_change_id
            ),
            last_change_id=sa.case((newer, last), else_=C.c.last_change_id),
            changes=C.c.changes + len(change_ids),
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
    with storage_errors("cannot read the replay conflicts"), engine.connect() as conn:
        return [_from_row(r) for r in conn.execute(q).all()]


def has_open_conflict(
    conn: sa.Connection,
    system: LegacySystemType,
    legacy_id: int | None,
    transaction_id: str | None,
) -> bool:
    """Whether this transaction (by either id) has a conflict no one has resolved yet."""
    which = []
    if legacy_id is not None:
        which.append(sa.and_(C.c.legacy_system == system.value, C.c.legacy_id == legacy_id))
    if transaction_id is not None:
        which.append(C.c.transaction_id == transaction_id)
    if not which:
        return False
    q = sa.select(C.c.id).where(C.c.resolved_at.is_(None), sa.or_(*which)).limit(1)
    return conn.execute(q).first() is not None


def open_conflict_count(engine: sa.Engine, system: LegacySystemType | None = None) -> int:
    """Undecided conflicts: of ``system``'s transactions (None: of every system's). One
    that names no system is judged by its transaction's unified row, and counts for
    every system when that is not known either."""
    q = sa.select(sa.func.count()).select_from(C).where(C.c.resolved_at.is_(None))
    if system is not None:
        U = unified_transactions
        whose = sa.func.coalesce(C.c.legacy_system, U.c.legacy_system)
        q = q.select_from(C.outerjoin(U, U.c.id == C.c.transaction_id)).where(
            sa.or_(whose == LegacySystemType.parse(system).value, whose.is_(None))
        )
    with storage_errors("cannot count the replay conflicts"), engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def get_conflict(engine: sa.Engine, conflict_id: int) -> ReplayConflict:
    with storage_errors(f"cannot read replay conflict #{conflict_id}"), engine.connect() as conn:
        row = conn.execute(sa.select(C).where(C.c.id == conflict_id)).first()
    if row is None:
        raise InputError(f"no replay conflict #{conflict_id}: see `unistatus rollback conflicts`")
    return _from_row(row)
