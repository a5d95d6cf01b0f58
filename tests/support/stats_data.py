"""Shared test data helpers (moved from test_alerts.py)."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from unistatus.adapter.core import OperationEvent
from unistatus.clock import utcnow
from unistatus.db.binding import unbound_connection
from unistatus.db.tables import cashouts, escrows, exchanges, unified_transactions
from unistatus.domain.ids import derive_utx_id
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.observe.stats import OperationStats

# Each system's reference legacy table, and its legacy status that maps to PENDING.
LEGACY = {
    LegacySystemType.CASHOUT: (cashouts, "PENDING"),
    LegacySystemType.ESCROW: (escrows, "CREATED"),
    LegacySystemType.EXCHANGE: (exchanges, "CREATED"),
}


def seed_pairs(
    engine: sa.Engine,
    n: int,
    *,
    drift: int = 0,
    system: LegacySystemType = LegacySystemType.CASHOUT,
) -> None:
    """``n`` consistent pairs (legacy + unified) of ``system`` (cashouts unless told),
    ``drift`` of them disagreeing."""
    now = utcnow()
    table, pending = LEGACY[system]
    legacy = [
        {
            "id": i,
            "user_id": 1000 + i,
            "amount": Decimal("10.50"),
            "currency": "USD",
            "status": pending,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(1, n + 1)
    ]
    unified = [
        {
            "id": derive_utx_id(system, i),
            "transaction_type": system.transaction_type.value,
            "legacy_system": system.value,
            "legacy_id": i,
            "user_id": 1000 + i,
            "amount": Decimal("10.50"),
            "currency": "USD",
            # Drifted rows: the unified side says SUCCESS while legacy is PENDING.
            "status": "SUCCESS" if i <= drift else "PENDING",
            "legacy_status": pending,
            "version": 1,
            "origin": "backfill",
            "created_at": now,
            "updated_at": now,
        }
        for i in range(1, n + 1)
    ]
    with engine.begin() as conn:
        with unbound_connection(conn):  # the application's table, never translated
            conn.execute(sa.insert(table), legacy)
        conn.execute(sa.insert(unified_transactions), unified)


def record_latency(
    engine: sa.Engine,
    mode: DualWriteMode,
    ms: float,
    n: int,
    errors: int = 0,
    *,
    system: LegacySystemType | None = None,
) -> None:
    stats = OperationStats(engine, start=False)
    for i in range(n):
        stats.record(OperationEvent("update_status", mode, i >= errors, ms, system=system))
    stats.flush()
