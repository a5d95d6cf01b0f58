"""A status the application's BEFORE trigger stored instead of the one unistatus sent.

A payments application may decide a status in the database: a ``BEFORE INSERT`` or
``BEFORE UPDATE`` row trigger that holds a large cashout for an admin (``NEW.status :=
'ADMIN_PENDING'``). The legacy write then stores another status than the one the adapter
sent. That is the application's decision: unified takes it (the status it maps to), and
so do the result and the change's history row. Each legacy write of the adapter returns
what it stored; only where that differs does a second statement, in the same
transaction where there is one, rewrite what was written with the status sent.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.adapter.model import Plan
from unistatus.db.legacy import LegacyTable
from unistatus.db.tables import status_history, unified_transactions
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import LegacySystemType, UnifiedTransactionStatus

__all__ = ["Statuses", "hold_change", "held_status", "rewrite_written"]

# (unified status, legacy status)
Statuses = tuple[UnifiedTransactionStatus, str]


def held_status(
    mapper: LegacyStatusMapper, system: LegacySystemType, sent: Statuses, stored: str | None
) -> Statuses:
    """The statuses once a legacy write of ``sent`` stored ``stored``: ``sent`` where it
    stored the same (or nothing was read back); a stored status that maps to nothing
    stays as sent too: ``check`` reports the legacy row unmappable."""
    if stored is None or stored == sent[1]:
        return sent
    mapped = mapper.try_to_unified(system, stored)
    return sent if mapped is None else (mapped, stored)


def rewrite_written(
    conn: sa.Connection,
    utx_id: str,
    op_id: str,
    sent: Statuses,
    held: Statuses,
    legacy: tuple[LegacyTable, Any],
    *,
    version: int | None = None,
) -> bool:
    """The unified row just written, and the history row of the operation ``op_id``, hold
    ``held`` instead of ``sent``, if the row still holds ``sent`` (at ``version``, if
    given) and the legacy row (``legacy``: its table and id) still holds ``held``;
    whether they did. Either may have moved on within the write's statement: the
    application's AFTER trigger wrote the legacy row again (which the legacy write's
    RETURNING does not show), and the capture mirrored that from the status sent, or
    found nothing to mirror where it wrote the status sent back. Then all is left as
    written: unified and legacy in step, the history an unbroken chain."""
    (was, was_legacy), (dst, dst_legacy) = sent, held
    U, H = unified_transactions, status_history
    lt, legacy_id = legacy
    legacy_holds = sa.exists(
        sa.select(lt.id).where(lt.id == legacy_id, lt.read("status") == dst_legacy)
    )
    guard = [
        U.c.id == utx_id,
        U.c.status == was.value,
        U.c.legacy_status == was_legacy,
        legacy_holds,
    ]
    if version is not None:
        guard.append(U.c.version == version)
    rewritten = conn.execute(
        sa.update(U)
        .where(*guard)
        .values(status=dst.value, legacy_status=dst_legacy)
        .returning(U.c.id)
    ).first()
    if rewritten is None:
        return False
    conn.execute(
        sa.update(H)
        .where(H.c.transaction_id == utx_id, H.c.operation_id == op_id)
        .values(to_status=dst.value, to_legacy_status=dst_legacy)
    )
    return True


def hold_change(
    conn: sa.Connection,
    mapper: LegacyStatusMapper,
    plan: Plan,
    stored: str | None,
    lt: LegacyTable,
) -> None:
    """After a status change's writes: where legacy (``lt``) stored another status than
    the one sent (:func:`held_status`), what was written with the one sent takes it (the
    modes that write unified: :func:`rewrite_written`, on ``conn``), and so does
    ``plan``, which the result and the state the adapter remembers are made from."""
    sent = (plan.dst, plan.dst_legacy)
    held = held_status(mapper, plan.entity.system, sent, stored)
    if held == sent:
        return
    if plan.mode.writes_unified:
        e = plan.entity
        version = e.unified["version"] + 1 if e.unified is not None else None
        legacy = (lt, e.legacy_id)
        if not rewrite_written(
            conn, e.utx_id, plan.operation_id, sent, held, legacy, version=version
        ):
            return
    plan.dst, plan.dst_legacy = held
