"""``backfill --retry-quarantine``: every quarantined row the mapping now covers, migrated.

The backfill's retry (:func:`unistatus.backfill.retry_quarantine`) copies a row that has
no unified row yet. An entry of a row that has one (a bypass writer's unmappable value,
set aside by the capture: docs/capture.md) is brought in step here, as the capture
brings in step a later write that makes the row mappable: the row taken whole (its
status, its shared fields), a history row per entity (``triggered_by``
:data:`RETRY_WRITER`), the entry resolved ``migrated``; per system in one transaction,
under the system's mode lock. A system in LEGACY_ONLY (unified not maintained) keeps its
entries: the catch-up brings the row in step when a dual mode is entered. So does a row
whose unified side changed after the value was set aside (an acknowledged change newer
than the legacy row: UNIFIED_ONLY's frozen legacy, a legacy side refused under
``primary_wins``), counted ``in_step_needed``: an operator decides (``repair``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.backfill import retry_quarantine as retry_copies
from unistatus.backfill.statements import mapped_status
from unistatus.config import Settings
from unistatus.db.dialect import ops_for
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.mode_reads import read_mode
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_quarantine as Q
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import StorageError
from unistatus.migration.capture_context import statement_context
from unistatus.migration.capture_rows import Rows
from unistatus.migration.capture_sql import SystemSql

__all__ = ["RETRY_WRITER", "retry_quarantine"]

# The writer named in the history of a row the retry brought in step.
RETRY_WRITER = "retry:quarantine"


def retry_quarantine(
    engine: sa.Engine, settings: Settings, *, systems: list[LegacySystemType] | None = None
) -> dict[str, Any]:
    """Migrate every quarantined row the mapping now covers (see the module): the rows
    with a unified row brought in step (counted ``in_step`` and ``migrated``), then the
    others copied by the backfill's retry."""
    tables = resolve_legacy_tables(engine, settings, systems=systems)
    stepped = {system.value: _in_step(engine, settings, lt) for system, lt in tables.items()}
    result = retry_copies(engine, settings, systems=systems)
    for name, figures in result["systems"].items():
        figures["in_step"] = stepped.get(name, 0)
        figures["migrated"] += figures["in_step"]
    result["in_step"] = sum(stepped.values())
    result["migrated"] += result["in_step"]
    return result


def _in_step(engine: sa.Engine, settings: Settings, lt: LegacyTable) -> int:
    """One system's open entries of mappable rows that have their unified row, brought
    in step; how many were resolved."""
    ops = ops_for(engine)
    system = lt.system
    entry = sa.and_(Q.c.system == system.value, Q.c.resolved_at.is_(None), Q.c.legacy_id == lt.id)
    # Its unified row has not moved on since the value was set aside (else an
    # acknowledged change is newer than the legacy row: UNIFIED_ONLY's frozen legacy, a
    # refused legacy side under primary_wins), or it already follows the legacy row.
    unified = sa.exists().where(
        U.c.legacy_system == system.value,
        U.c.legacy_id == lt.id,
        sa.or_(U.c.updated_at <= Q.c.last_seen_at, U.c.legacy_status == lt.read("status")),
    )
    where = sa.and_(unified, mapped_status(lt).is_not(None))
    waiting = sa.select(sa.func.count()).select_from(lt.table.join(Q, entry)).where(where)
    try:
        with ops.write_transaction() as conn:
            ops.bound_statements(conn, settings.statement_timeout_ms, settings.lock_timeout_ms)
            ops.mode_shared_lock(conn, system)
            mode = read_mode(conn, system)
            before = int(conn.execute(waiting).scalar_one())
            if not before or mode is DualWriteMode.LEGACY_ONLY:
                return 0
            ctx = statement_context(
                ops.name, RETRY_WRITER, mode.value, "quarantine retry", "retry_quarantine"
            )
            rows = Rows.of_table(lt, lt.table.join(Q, entry), where=where)
            for statement in SystemSql(lt, ops).bring_in_step(rows, ctx, lock=True, bypass=False):
                conn.execute(statement)
            return before - int(conn.execute(waiting).scalar_one())
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot retry the quarantine of {system.value}: {exc.orig}") from None
