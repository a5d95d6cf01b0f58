"""The mapping's validation suite (docs/status-model.md), one test class per concern."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus import (
    CashoutStatus,
    DualWriteAdapter,
    DualWriteMode,
    EscrowStatus,
    ExchangeStatus,
    LegacyStatusMapper,
    LegacySystemType,
    UnifiedTransactionStatus,
    UnifiedTransactionType,
)
from unistatus.db.control import set_mode
from unistatus.db.tables import legacy_metadata, status_history, unified_transactions


def _legacy(db: Database, table: str, legacy_id: int) -> dict[str, Any]:
    t = legacy_metadata.tables[table]
    with db.engine.connect() as conn:
        return dict(conn.execute(sa.select(t).where(t.c.id == legacy_id)).mappings().one())


def _unified(db: Database, utx_id: str) -> dict[str, Any]:
    with db.engine.connect() as conn:
        q = sa.select(unified_transactions).where(unified_transactions.c.id == utx_id)
        return dict(conn.execute(q).mappings().one())


def _history(db: Database, utx_id: str) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        q = (
            sa.select(status_history)
            .where(status_history.c.transaction_id == utx_id)
            .order_by(status_history.c.id)
        )
        return [dict(r) for r in conn.execute(q).mappings()]


def _adapter(db: Database) -> DualWriteAdapter:
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    adapter.modes.refresh()
    assert adapter.mode is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
    return adapter


class TestLegacyStatusMapperCompleteness:
    mapper = LegacyStatusMapper()

    def _all_mapped(self, system: LegacySystemType, enum: Any, count: int) -> None:
        assert len(enum) == count
        for status in enum:
            unified = self.mapper.to_unified(system, status)
            assert isinstance(unified, UnifiedTransactionStatus)
            assert self.mapper.is_compatible(system, status, unified)

    def test_all_cashout_statuses_mapped(self) -> None:
        self._all_mapped(LegacySystemType.CASHOUT, CashoutStatus, 14)

    def test_all_escrow_statuses_mapped(self) -> None:
        self._all_mapped(LegacySystemType.ESCROW, EscrowStatus, 13)

    def test_all_exchange_statuses_mapped(self) -> None:
        self._all_mapped(LegacySystemType.EXCHANGE, ExchangeStatus, 11)

    def test_total_legacy_status_coverage(self) -> None:
        report = self.mapper.validate()
        assert report.total_legacy == 38
        assert report.total_mapped == 38
        assert report.coverage == 1.0
        assert report.ok, report.problems
        assert len(report.unified_reachable) == len(UnifiedTransactionStatus) == 16


class TestDualWriteAdapterIntegration:
    def test_create_transaction_dual_write_success(self, db: Database) -> None:
        adapter = _adapter(db)
        result = adapter.create_transaction(
            UnifiedTransactionType.WALLET_CASHOUT, 7, Decimal("125.50000001"), "USDT"
        )
        assert result.overall_success and result.primary_success and result.secondary_success
        assert not result.has_inconsistency and result.error is None
        assert result.legacy_entity_id is not None and result.entity_id is not None
        legacy = _legacy(db, "cashouts", result.legacy_entity_id)
        unified = _unified(db, result.entity_id)
        assert legacy["status"] == "PENDING"
        assert (legacy["user_id"], Decimal(legacy["amount"]), legacy["currency"]) == (
            7,
            Decimal("125.50000001"),
            "USDT",
        )
        assert unified["status"] == "PENDING" and unified["legacy_status"] == "PENDING"
        assert unified["legacy_system"] == "CASHOUT"
        assert unified["legacy_id"] == result.legacy_entity_id
        assert unified["transaction_type"] == "WALLET_CASHOUT"
        assert Decimal(unified["amount"]) == Decimal("125.50000001")
        assert unified["origin"] == "dual_write" and unified["version"] == 1
        (created,) = _history(db, result.entity_id)
        assert created["from_status"] is None and created["to_status"] == "PENDING"
        assert created["operation_id"] == result.operation_id
        assert created["mode"] == "DUAL_WRITE_LEGACY_PRIMARY"

    def test_update_status_dual_write_success(self, db: Database) -> None:
        adapter = _adapter(db)
        created = adapter.create_transaction("ESCROW", 3, "10", "BTC")
        ref = f"escrow:{created.legacy_entity_id}"
        result = adapter.update_status(ref, "AWAITING_PAYMENT", "buyer invoiced", "svc-escrow")
        assert result.overall_success and result.changed
        assert result.entity_id == created.entity_id
        assert result.status is UnifiedTransactionStatus.AWAITING_PAYMENT
        assert _legacy(db, "escrows", created.legacy_entity_id or 0)["status"] == "PAYMENT_PENDING"
        unified = _unified(db, created.entity_id or "")
        assert unified["status"] == "AWAITING_PAYMENT"
        assert unified["legacy_status"] == "PAYMENT_PENDING" and unified["version"] == 2
        history = _history(db, created.entity_id or "")
        assert [(h["from_status"], h["to_status"]) for h in history] == [
            (None, "PENDING"),
            ("PENDING", "AWAITING_PAYMENT"),
        ]
        last = history[-1]
        assert (last["from_legacy_status"], last["to_legacy_status"]) == (
            "CREATED",
            "PAYMENT_PENDING",
        )
        assert last["reason"] == "buyer invoiced" and last["triggered_by"] == "svc-escrow"
        status, meta = adapter.get_transaction_status(ref)
        assert status is UnifiedTransactionStatus.AWAITING_PAYMENT
        assert meta["source"] == "legacy"

    def test_consistency_checking(self, db: Database) -> None:
        adapter = _adapter(db)
        created = adapter.create_transaction("EXCHANGE", 5, "99.5", "EUR")
        ref = f"exchange:{created.legacy_entity_id}"
        report = adapter.check_consistency(ref, LegacySystemType.EXCHANGE)
        assert report == {**report, "consistent": True, "inconsistencies": []}
        # Break it behind the adapter's back: the legacy app writes a different status.
        with db.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE exchanges SET status = 'PROCESSING' WHERE id = :i"),
                {"i": created.legacy_entity_id},
            )
        report = adapter.check_consistency(ref, "exchange")
        assert report["consistent"] is False
        kinds = [i["kind"] for i in report["inconsistencies"]]
        assert kinds == ["status_mismatch"]
        # A compatible legacy value is no status mismatch, but unified's exact copy of the
        # legacy status is stale now (legacy_status_drift); an amount drift is a mismatch.
        with db.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE exchanges SET status = 'RATE_LOCKED', amount = 99.6 WHERE id = :i"),
                {"i": created.legacy_entity_id},
            )
        report = adapter.check_consistency(created.entity_id, "exchange")
        assert [i["kind"] for i in report["inconsistencies"]] == [
            "legacy_status_drift",
            "field_mismatch",
        ]
        with pytest.raises(Exception, match="EXCHANGE"):
            adapter.check_consistency(ref, "cashout")
