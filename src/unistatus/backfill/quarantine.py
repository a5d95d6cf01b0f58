"""The quarantine of unmappable legacy rows: counting it and retrying it.

``retry_quarantine`` re-reads each quarantined legacy row: once the mapping covers its
value (a mapping release, or the legacy row was corrected) it is migrated with the
same set-based insert as a batch, and its quarantine entry is marked resolved.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.backfill.statements import mapped_status, unified_insert
from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.dialect import ops_for
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.rowcount import affected
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_quarantine as Q
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import StorageError


def quarantine_count(
    engine: sa.Engine, *, unresolved: bool = True, system: LegacySystemType | None = None
) -> int:
    """How many legacy rows (of ``system``; None: of every system) are (or, with
    ``unresolved=False``, ever were) quarantined."""
    q = sa.select(sa.func.count()).select_from(Q)
    if system is not None:
        q = q.where(Q.c.system == LegacySystemType.parse(system).value)
    if unresolved:
        q = q.where(Q.c.resolved_at.is_(None))
    try:
        with engine.connect() as conn:
            return int(conn.execute(q).scalar_one())
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot read the backfill quarantine: {exc.orig}") from None


def retry_quarantine(
    engine: sa.Engine, settings: Settings, *, systems: list[LegacySystemType] | None = None
) -> dict[str, Any]:
    """Migrate every quarantined row the mapping now covers that has no unified row yet
    (copied by the backfill's insert); one transaction per system.

    An entry of a row that has its unified row (a bypass writer's unmappable value, set
    aside by the capture) is left open and counted ``in_step_needed``: that row is
    brought in step as the capture brings a later write
    (:func:`unistatus.migration.quarantine_retry.retry_quarantine`, what ``backfill
    --retry-quarantine`` runs)."""
    ops = ops_for(engine)
    tables = resolve_legacy_tables(engine, settings, systems=systems)
    per_system: dict[str, dict[str, int]] = {}
    try:
        for system, lt in tables.items():
            now = utcnow()
            unresolved = sa.and_(Q.c.system == system.value, Q.c.resolved_at.is_(None))
            mappable_ids = sa.select(lt.id).where(mapped_status(lt).is_not(None))
            legacy_exists = sa.select(sa.literal(1)).where(lt.id == Q.c.legacy_id).exists()
            has_unified = sa.exists().where(
                U.c.legacy_system == system.value, U.c.legacy_id == Q.c.legacy_id
            )
            mappable = Q.c.legacy_id.in_(mappable_ids.scalar_subquery())
            with ops.write_transaction() as conn:
                # Resolved first (the rows about to be copied), then copied: an entry of
                # a row with a unified row stays open.
                migrated = conn.execute(
                    sa.update(Q)
                    .where(unresolved, mappable, ~has_unified)
                    .values(resolved_at=now, resolution="migrated")
                ).rowcount
                just = sa.select(Q.c.legacy_id).where(
                    Q.c.system == system.value, Q.c.resolved_at == now, Q.c.resolution == "migrated"
                )
                inserted = affected(
                    conn, unified_insert(ops, lt, lt.id.in_(just.scalar_subquery()))
                )
                in_step_needed = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(Q)
                    .where(unresolved, mappable, has_unified)
                ).scalar_one()
                gone = conn.execute(
                    sa.update(Q)
                    .where(unresolved, ~legacy_exists)
                    .values(resolved_at=now, resolution="legacy_row_gone")
                ).rowcount
                still = conn.execute(
                    sa.select(sa.func.count()).select_from(Q).where(unresolved)
                ).scalar_one()
            per_system[system.value] = {
                "migrated": migrated,
                "inserted": inserted,
                "already_present": max(0, migrated - inserted),
                "legacy_row_gone": gone,
                "still_unmappable": int(still) - int(in_step_needed),
                "in_step_needed": int(in_step_needed),
            }
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot retry the backfill quarantine: {exc.orig}") from None
    totals = {
        key: sum(s[key] for s in per_system.values())
        for key in (
            "migrated",
            "inserted",
            "already_present",
            "legacy_row_gone",
            "still_unmappable",
            "in_step_needed",
        )
    }
    return {**totals, "systems": per_system}
