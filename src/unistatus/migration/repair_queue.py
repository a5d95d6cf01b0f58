"""The adapter's repair queue, as repair reads and closes it.

The adapter enqueues an entity it could not keep consistent; here: how many rows are
open, the open rows page by page, which entity a row names, closing the rows of a
repaired entity with a resolution, and carrying the acknowledged writes legacy lacks to
the rollbacks' replay (:func:`carry_to_replay`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from unistatus.clock import utcnow
from unistatus.db.queued_legacy import open_queued_legacy
from unistatus.db.tables import pending_legacy_changes, repair_queue, unified_transactions
from unistatus.domain.ids import UtxId, derive_utx_id, parse_entity_id
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import UnistatusError

__all__ = [
    "CARRIED",
    "carry_to_replay",
    "open_repair_count",
    "open_rows",
    "queue_target",
    "resolve_queued",
]

PAGE = 1000  # open rows per read


def open_repair_count(engine: sa.Engine, system: LegacySystemType | None = None) -> int:
    """Unresolved rows of the adapter's repair queue (what still needs a repair run):
    of ``system``'s transactions (None: of every system's).

    A row that names no system is judged by its transaction's unified row; one whose
    system is not known at all counts for every system (it may be any one's)."""
    q = (
        sa.select(sa.func.count())
        .select_from(repair_queue)
        .where(repair_queue.c.resolved_at.is_(None))
    )
    if system is not None:
        U = unified_transactions
        whose = sa.func.coalesce(repair_queue.c.legacy_system, U.c.legacy_system)
        q = q.select_from(repair_queue.outerjoin(U, U.c.id == repair_queue.c.transaction_id)).where(
            sa.or_(whose == LegacySystemType.parse(system).value, whose.is_(None))
        )
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def open_rows(engine: sa.Engine, after: int) -> Sequence[sa.Row[Any]]:
    """The next page of unresolved rows with an id above ``after``, oldest first."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(
                repair_queue.c.id,
                repair_queue.c.transaction_id,
                repair_queue.c.legacy_system,
                repair_queue.c.legacy_id,
            )
            .where(repair_queue.c.resolved_at.is_(None), repair_queue.c.id > after)
            .order_by(repair_queue.c.id)
            .limit(PAGE)
        ).all()


def queue_target(
    utx_id: str | None, legacy_system: str | None, legacy_id: int | None
) -> tuple[LegacySystemType, int | None, str | None] | None:
    """The entity a queue row names, as ``(system, legacy_id, utx_id)``; None if none."""
    if legacy_system and legacy_id is not None:
        try:
            return LegacySystemType.parse(legacy_system), int(legacy_id), utx_id
        except UnistatusError:
            return None
    if utx_id:
        try:
            ref = parse_entity_id(utx_id)
        except UnistatusError:
            return None
        derived = ref.derived_ref if isinstance(ref, UtxId) else None
        if derived is not None:
            return derived.system, derived.legacy_id, utx_id
        if legacy_system:
            try:
                return LegacySystemType.parse(legacy_system), None, utx_id
            except UnistatusError:
                return None
    return None


def resolve_queued(
    conn: sa.Connection,
    system: LegacySystemType,
    legacy_id: int | None,
    utx_id: str | None,
    resolution: str,
) -> int:
    """Close the open rows naming this entity (by legacy key or id); how many closed."""
    match = []
    if legacy_id is not None:
        match.append(
            sa.and_(
                repair_queue.c.legacy_system == system.value,
                repair_queue.c.legacy_id == legacy_id,
            )
        )
        match.append(repair_queue.c.transaction_id == derive_utx_id(system, legacy_id))
    if utx_id is not None:
        match.append(repair_queue.c.transaction_id == utx_id)
    result = conn.execute(
        sa.update(repair_queue)
        .where(repair_queue.c.resolved_at.is_(None), sa.or_(*match))
        .values(resolved_at=utcnow(), resolution=resolution[:2000])
    )
    return max(result.rowcount, 0)


CARRIED = "carried to legacy by the rollback's replay (pending change {change})"


def carry_to_replay(conn: sa.Connection, system: LegacySystemType | None) -> int:
    """Turn the open queue rows of a refused legacy side (of ``system``'s transactions;
    None: every system's) into pending legacy changes, one per transaction, and close
    them: the replay then writes legacy, or keeps a conflict, as it does for a change
    made in UNIFIED_ONLY. The caller holds the exclusive mode lock (a replay round), so
    no write is queued between this and the mode switch. Returns how many transactions.

    A transaction without a legacy row (its create's INSERT refused) becomes a
    ``create`` under its create's operation: the replay inserts the row with the
    ``legacy_values`` that history row kept and the newest status. Any other becomes a
    ``status`` change to the unified row's legacy image, judged from what its newest
    refused write started from (that operation's history row): a legacy row that moved
    since is a conflict, never overwritten.
    """
    rows = conn.execute(open_queued_legacy([system.value] if system else None)).all()
    by_tx: dict[str, list[Any]] = {}
    for r in rows:
        by_tx.setdefault(r.transaction_id, []).append(r)
    now = utcnow()
    for tx, queued in by_tx.items():
        create = queued[0].legacy_id is None
        change = conn.execute(
            sa.insert(pending_legacy_changes)
            .values(
                transaction_id=tx,
                kind="create" if create else "status",
                legacy_status=queued[-1].legacy_status,
                operation_id=(queued[0] if create else queued[-1]).operation_id,
                created_at=now,
            )
            .returning(pending_legacy_changes.c.id)
        ).scalar_one()
        conn.execute(
            sa.update(repair_queue)
            .where(repair_queue.c.id.in_([r.id for r in queued]))
            .values(resolved_at=now, resolution=CARRIED.format(change=change))
        )
    return len(by_tx)
