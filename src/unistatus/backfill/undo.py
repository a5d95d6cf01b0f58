"""Undo a backfill (phase 2 rollback): remove the unified rows only it wrote.

A unified row created by the backfill has ``origin='backfill'`` and ``version=1``; the
adapter bumps ``version`` on every write, so such a row has not been touched by live
traffic since. Rows the adapter created or updated are kept. The delete runs in
bounded batches and re-checks the condition in its own WHERE, so a concurrent adapter
write to a row either lands first (row kept) or after (row already gone from unified,
recreated by the adapter's upsert from legacy).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.backfill.progress import progress
from unistatus.backfill.statements import ORIGIN
from unistatus.config import Settings
from unistatus.db.dialect import ops_for
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_chunks as CH
from unistatus.db.tables_backfill import backfill_jobs as J
from unistatus.db.tables_backfill import backfill_quarantine as Q
from unistatus.errors import ModeError, StorageError
from unistatus.statuses import LegacySystemType

DELETE_BATCH = 10_000


def undo(
    engine: sa.Engine, settings: Settings, *, systems: list[LegacySystemType] | None = None
) -> dict[str, Any]:
    """Delete untouched backfilled rows and reset the backfill state; report counts."""
    chosen = systems or list(LegacySystemType)
    current = progress(engine, settings)
    busy = [s.value for s in chosen if current[s.value]["state"] in ("running", "paused")]
    if busy:
        raise ModeError(
            f"a backfill of {', '.join(busy)} is running or paused; let it finish (or stop "
            "its workers: state turns 'stalled' a minute after the last batch) before undoing"
        )
    ops = ops_for(engine)
    untouched = sa.and_(U.c.origin == ORIGIN, U.c.version == 1)
    per_system: dict[str, dict[str, int]] = {}
    try:
        for system in chosen:
            mine = U.c.legacy_system == system.value
            removed = 0
            while True:
                ids = sa.select(U.c.id).where(mine, untouched).limit(DELETE_BATCH)
                with ops.write_transaction() as conn:
                    n = conn.execute(
                        sa.delete(U).where(U.c.id.in_(ids.scalar_subquery()), mine, untouched)
                    ).rowcount
                removed += n
                if n < DELETE_BATCH:
                    break
            with ops.write_transaction() as conn:
                kept_touched = conn.execute(
                    sa.select(sa.func.count()).where(mine, U.c.origin == ORIGIN)
                ).scalar_one()
                kept_live = conn.execute(
                    sa.select(sa.func.count()).where(mine, U.c.origin != ORIGIN)
                ).scalar_one()
                conn.execute(sa.delete(CH).where(CH.c.system == system.value))
                conn.execute(sa.delete(J).where(J.c.system == system.value))
                cleared = conn.execute(sa.delete(Q).where(Q.c.system == system.value)).rowcount
            per_system[system.value] = {
                "removed": removed,
                "kept_touched_since": int(kept_touched),
                "kept_live_rows": int(kept_live),
                "quarantine_cleared": cleared,
            }
    except sa.exc.OperationalError as exc:
        raise StorageError(
            f"backfill undo interrupted: {exc.orig}; rerun it to finish (it is idempotent)"
        ) from None
    totals = {
        key: sum(s[key] for s in per_system.values())
        for key in ("removed", "kept_touched_since", "kept_live_rows", "quarantine_cleared")
    }
    return {**totals, "systems": per_system}
