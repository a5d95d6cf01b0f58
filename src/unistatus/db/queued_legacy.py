"""Acknowledged writes legacy lacks: repair-queue rows whose legacy side was refused.

Under ``primary_wins`` in DUAL_WRITE_UNIFIED_PRIMARY the unified side commits, with its
history row written in that mode, and a legacy UPDATE or INSERT the database refused is
queued in ``unistatus_repair_queue``. Such a row, open, is a write the application was
told succeeded and legacy has not seen: leaving the unified-primary mode must carry it
to legacy first (the rollbacks' replay does, :func:`unistatus.migration.repair_queue.
carry_to_replay`), so a hand switch refuses (:func:`refuse_queued_legacy`), and
``check`` counts a transaction left without a legacy row at all (:func:`count_missing_legacy`).

A queue row of a refused *unified* side (DUAL_WRITE_LEGACY_PRIMARY) has no history row
for its operation: legacy, the primary, has that write, and nothing here selects it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.db.tables import repair_queue, status_history, unified_transactions
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import ModeError

__all__ = [
    "count_missing_legacy",
    "legacy_missing",
    "open_queued_legacy",
    "refuse_queued_legacy",
]

Q, H, U = repair_queue, status_history, unified_transactions


def _legacy_side_refused() -> sa.ColumnElement[bool]:
    """The queue row's operation committed its unified side in a unified-primary mode."""
    return sa.exists(
        sa.select(H.c.id).where(
            H.c.transaction_id == Q.c.transaction_id,
            H.c.operation_id == Q.c.operation_id,
            H.c.mode == DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY.value,
        )
    )


def open_queued_legacy(systems: Sequence[str] | None = None) -> sa.Select[Any]:
    """The open queue rows of a refused legacy side, of the transactions of ``systems``
    (values; None: every system's), oldest first, each with its transaction's unified
    row: ``id``, ``transaction_id``, ``operation_id``, ``legacy_system``, ``legacy_id``
    (None: the legacy INSERT of its create was refused), ``legacy_status``."""
    q = (
        sa.select(
            Q.c.id,
            Q.c.transaction_id,
            Q.c.operation_id,
            U.c.legacy_system,
            U.c.legacy_id,
            U.c.legacy_status,
        )
        .select_from(Q.join(U, U.c.id == Q.c.transaction_id))
        .where(Q.c.resolved_at.is_(None), _legacy_side_refused())
        .order_by(Q.c.id)
    )
    if systems is not None:
        q = q.where(U.c.legacy_system.in_(list(systems)))
    return q


def refuse_queued_legacy(conn: sa.Connection, new: DualWriteMode, leaving: Sequence[str]) -> None:
    """ModeError when systems ``leaving`` a unified-primary mode (values) for ``new``, one
    that reads legacy, have acknowledged writes legacy lacks: switching by hand would
    make legacy, which then decides, serve and build on the older statuses."""
    if new.reads_unified or not leaving:
        return
    rows = open_queued_legacy(leaving).subquery()
    found: dict[str, int] = {
        str(system): int(n)
        for system, n in conn.execute(
            sa.select(rows.c.legacy_system, sa.func.count()).group_by(rows.c.legacy_system)
        ).all()
    }
    if not found:
        return
    flag = f" --system {next(iter(found)).lower()}" if len(found) == 1 else ""
    per = ", ".join(f"{system} {n}" for system, n in sorted(found.items()))
    raise ModeError(
        f"{sum(found.values())} acknowledged write(s) ({per}) are not in legacy "
        "(the database refused their legacy side; they wait in the repair queue): "
        f"switching to {new.value} by hand would lose them. Use `unistatus phase "
        f"rollback{flag}` or `unistatus rollback --emergency{flag}`, which write them to "
        "legacy first, or `unistatus repair --strategy unified_wins` once the refusal is fixed"
    )


def count_missing_legacy(
    conn: sa.Connection, systems: Sequence[str], since: datetime | None
) -> dict[str, int]:
    """Per system (values; 0 where none), the transactions acknowledged without a legacy
    row (their create's legacy INSERT refused, queued): legacy lacks them (``since``:
    only those updated since). One statement for every system."""
    q = open_queued_legacy(systems).where(U.c.legacy_id.is_(None))
    if since is not None:
        q = q.where(U.c.updated_at >= since)
    ids = q.with_only_columns(U.c.legacy_system, U.c.id).order_by(None).distinct().subquery()
    counted = sa.select(ids.c.legacy_system, sa.func.count()).group_by(ids.c.legacy_system)
    found = {str(system): int(n) for system, n in conn.execute(counted).all()}
    return {system: found.get(system, 0) for system in systems}


def legacy_missing(conn: sa.Connection, transaction_id: str) -> bool:
    """Whether the transaction was acknowledged without its legacy row: one of those
    :func:`count_missing_legacy` counts."""
    q = open_queued_legacy().where(Q.c.transaction_id == transaction_id, U.c.legacy_id.is_(None))
    return conn.execute(q.limit(1)).first() is not None
