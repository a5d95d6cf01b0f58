"""Shared test data helpers (moved from test_alerts.py)."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from unistatus.adapter.core import OperationEvent
from unistatus.clock import utcnow
from unistatus.db.binding import unbound_connection
from unistatus.db.tables import cashouts, unified_transactions
from unistatus.domain.ids import derive_utx_id
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.observe.stats import OperationStats


def seed_pairs(engine: sa.Engine, n: int, *, drift: int = 0) -> None:
    """``n`` consistent cashout pairs (legacy + unified), ``drift`` of them disagreeing."""
    now = utcnow()
    legacy = [
        {
            "id": i,
            "user_id": 1000 + i,
            "amount": Decimal("10.50"),
            "currency": "USD",
            "status": "PENDING",
            "created_at": now,
            "updated_at": now,
        }
        for i in range(1, n + 1)
    ]
    unified = [
        {
            "id": derive_utx_id(LegacySystemType.CASHOUT, i),
            "transaction_type": "WALLET_CASHOUT",
            "legacy_system": "CASHOUT",
            "legacy_id": i,
            "user_id": 1000 + i,
            "amount": Decimal("10.50"),
            "currency": "USD",
            # Drifted rows: the unified side says SUCCESS while legacy is PENDING.
            "status": "SUCCESS" if i <= drift else "PENDING",
            "legacy_status": "PENDING",
            "version": 1,
            "origin": "backfill",
            "created_at": now,
            "updated_at": now,
        }
        for i in range(1, n + 1)
    ]
    with engine.begin() as conn:
        with unbound_connection(conn):  # the application's table, never translated
            conn.execute(sa.insert(cashouts), legacy)
        conn.execute(sa.insert(unified_transactions), unified)


def record_latency(
    engine: sa.Engine, mode: DualWriteMode, ms: float, n: int, errors: int = 0
) -> None:
    stats = OperationStats(engine, start=False)
    for i in range(n):
        stats.record(OperationEvent("update_status", mode, i >= errors, ms))
    stats.flush()
