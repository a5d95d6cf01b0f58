"""Status changes to and from a configured extra legacy value (REFUND_REQUESTED ->
CANCELLED) through the adapter, in every mode, on SQLite and PostgreSQL: it is written
as is, the unified side gets its unified status, and the transition rules are those of
that unified status (it behaves like CANCELLED)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.config import CONFIG_FILE_ENV, load_settings
from unistatus.db.control import set_mode
from unistatus.db.tables import legacy_metadata, status_history, unified_transactions
from unistatus.domain.statuses import UnifiedTransactionStatus as U
from unistatus.errors import InvalidStatusError, InvalidTransitionError

EXTRA = {"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}}


def _adapter(db: Database, mode: DualWriteMode, **settings: Any) -> DualWriteAdapter:
    set_mode(db.engine, mode, reason="test", actor="test", force=True)
    adapter = DualWriteAdapter(
        db.engine, settings=load_settings(database_url=db.url, mapping=EXTRA, **settings)
    )
    adapter.modes.refresh()
    return adapter


def _legacy_status(db: Database, legacy_id: int) -> str:
    t = legacy_metadata.tables["cashouts"]
    with db.engine.connect() as conn:
        return str(conn.execute(sa.select(t.c.status).where(t.c.id == legacy_id)).scalar_one())


def _unified(db: Database, utx_id: str) -> dict[str, Any]:
    with db.engine.connect() as conn:
        q = sa.select(unified_transactions).where(unified_transactions.c.id == utx_id)
        return dict(conn.execute(q).mappings().one())


def _last_history(db: Database, utx_id: str) -> dict[str, Any]:
    with db.engine.connect() as conn:
        q = (
            sa.select(status_history)
            .where(status_history.c.transaction_id == utx_id)
            .order_by(status_history.c.id.desc())
            .limit(1)
        )
        return dict(conn.execute(q).mappings().one())


@pytest.mark.parametrize("mode", list(DualWriteMode))
def test_update_to_the_extra_value_in_every_mode(db: Database, mode: DualWriteMode) -> None:
    adapter = _adapter(db, mode)
    created = adapter.create_transaction("WALLET_CASHOUT", 42, "150.00", "USD")
    assert created.overall_success, created.error
    ref = created.entity_id if mode is DualWriteMode.UNIFIED_ONLY else None
    ref = ref or f"cashout:{created.legacy_entity_id}"
    result = adapter.update_status(ref, "REFUND_REQUESTED", "user asked", "support")
    assert result.overall_success and result.changed, result.error
    assert result.status is U.CANCELLED and result.legacy_status == "REFUND_REQUESTED"
    if mode.writes_legacy:
        assert _legacy_status(db, created.legacy_entity_id or 0) == "REFUND_REQUESTED"
    if mode.writes_unified:
        unified = _unified(db, created.entity_id or "")
        assert (unified["status"], unified["legacy_status"]) == ("CANCELLED", "REFUND_REQUESTED")
        history = _last_history(db, created.entity_id or "")
        assert (history["to_status"], history["to_legacy_status"]) == (
            "CANCELLED",
            "REFUND_REQUESTED",
        )
    if mode.is_dual:
        assert adapter.check_consistency(ref)["consistent"] is True
    status, _ = adapter.get_transaction_status(ref)
    assert status is U.CANCELLED
    adapter.close()


def test_the_extra_value_follows_the_rules_of_its_unified_status(db: Database) -> None:
    adapter = _adapter(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    created = adapter.create_transaction("WALLET_CASHOUT", 7, "10", "USD")
    ref = f"cashout:{created.legacy_entity_id}"
    # Not allowed from PROCESSING, exactly as CANCELLED is not.
    assert adapter.update_status(ref, "PROCESSING", "sent", "t").overall_success
    with pytest.raises(InvalidTransitionError, match="PROCESSING to CANCELLED"):
        adapter.update_status(ref, "REFUND_REQUESTED", "too late", "t")
    # From a refunded cashout, nothing leaves CANCELLED (final) but an admin override.
    other = adapter.create_transaction("WALLET_CASHOUT", 7, "10", "USD")
    ref = f"cashout:{other.legacy_entity_id}"
    assert adapter.update_status(ref, "REFUND_REQUESTED", "user asked", "t").overall_success
    with pytest.raises(InvalidTransitionError, match="CANCELLED to PENDING"):
        adapter.update_status(ref, "PENDING", "reopen", "t")
    # Writing CANCELLED again is a no-op that keeps the legacy spelling.
    again = adapter.update_status(ref, "CANCELLED", "again", "t")
    assert again.overall_success and not again.changed
    assert _legacy_status(db, other.legacy_entity_id or 0) == "REFUND_REQUESTED"
    # A forced change away works as for any final status, back to a canonical value.
    forced = adapter.update_status(ref, "PENDING", "reopened by ops", "admin", force=True)
    assert forced.overall_success and forced.legacy_status == "PENDING"
    adapter.close()


def test_create_with_the_extra_value(db: Database) -> None:
    adapter = _adapter(db, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY)
    created = adapter.create_transaction("WALLET_CASHOUT", 9, "5", "USD", status="REFUND_REQUESTED")
    assert created.overall_success, created.error
    assert created.status is U.CANCELLED and created.legacy_status == "REFUND_REQUESTED"
    assert _legacy_status(db, created.legacy_entity_id or 0) == "REFUND_REQUESTED"
    # Another system does not know it.
    with pytest.raises(InvalidStatusError):
        adapter.create_transaction("ESCROW", 9, "5", "USD", status="REFUND_REQUESTED")
    adapter.close()


def test_an_adapter_built_without_settings_reads_the_config_file(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library user's path: DualWriteAdapter(url) loads the settings, config included."""
    path = tmp_path / "unistatus.toml"
    path.write_text('[mapping.CASHOUT]\nREFUND_REQUESTED = "CANCELLED"\n')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    with DualWriteAdapter(db.url) as adapter:
        created = adapter.create_transaction("WALLET_CASHOUT", 1, "1", "USD")
        result = adapter.update_status(
            f"cashout:{created.legacy_entity_id}", "REFUND_REQUESTED", "asked", "t"
        )
        assert result.overall_success and result.status is U.CANCELLED
