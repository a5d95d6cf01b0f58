"""The adapter's repair queue, as repair reads and closes it.

The adapter enqueues an entity it could not keep consistent; here: how many rows are
open, the open rows page by page, which entity a row names, and closing the rows of a
repaired entity with a resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from unistatus.clock import utcnow
from unistatus.db.tables import repair_queue, unified_transactions
from unistatus.domain.ids import UtxId, derive_utx_id, parse_entity_id
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import UnistatusError

__all__ = ["open_repair_count", "open_rows", "queue_target", "resolve_queued"]

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
