"""Shared backfill test helpers: legacy and unified rows, inconsistencies."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.backfill import run_backfill
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.consistency import compare
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import LegacySystemType

mapper = LegacyStatusMapper()


def legacy_rows(
    engine: sa.Engine, settings: Any
) -> dict[LegacySystemType, dict[int, dict[str, Any]]]:
    out: dict[LegacySystemType, dict[int, dict[str, Any]]] = {}
    with engine.connect() as conn:
        for system, lt in resolve_legacy_tables(engine, settings).items():
            q = sa.select(
                lt.id.label("id"),
                lt.status.label("status"),  # type: ignore[union-attr]
                lt.user_id.label("user_id"),
                lt.amount.label("amount"),
                lt.currency.label("currency"),
            )
            out[system] = {r.id: dict(r._mapping) for r in conn.execute(q)}
    return out


def unified_rows(engine: sa.Engine) -> dict[tuple[str, int], dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(U)).mappings().all()
    return {(r["legacy_system"], r["legacy_id"]): dict(r) for r in rows}


def mappable_count(legacy: dict[LegacySystemType, dict[int, dict[str, Any]]]) -> int:
    return sum(
        1
        for system, rows in legacy.items()
        for r in rows.values()
        if mapper.try_to_unified(system, r["status"]) is not None
    )


def inconsistencies(engine: sa.Engine, settings: Any) -> list[Any]:
    """Every inconsistency (consistency.compare) over all legacy and unified rows."""
    legacy = legacy_rows(engine, settings)
    unified = unified_rows(engine)
    found = []
    for system, rows in legacy.items():
        for lid, row in rows.items():
            found += compare(system, row, unified.get((system.value, lid)))
    for (system, lid), u in unified.items():
        if lid not in legacy[LegacySystemType(system)]:
            found += compare(LegacySystemType(system), None, u)
    return found


class _Stop(Exception):
    pass


def interrupted_job(db: Any) -> None:
    """An unfinished backfill job that no worker runs now: a run over the legacy rows
    there are (more than one batch of 50) stopped after its first batch."""

    def stop(_system: str, done: int, _total: int) -> None:
        if done:
            raise _Stop

    try:
        run_backfill(db.engine, db.settings, batch_size=50, workers=1, progress=stop)
    except _Stop:
        return
    raise AssertionError("the backfill finished in one batch: seed more legacy rows")


def quarantined(db: Any, system: str = "CASHOUT") -> dict[int, str]:
    """The open quarantine entries of ``system``: legacy id -> reason."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT legacy_id, reason FROM unistatus_backfill_quarantine "
                "WHERE system = :s AND resolved_at IS NULL"
            ),
            {"s": system},
        ).all()
    return {int(r[0]): str(r[1]) for r in rows}
