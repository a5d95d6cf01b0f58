"""A transaction born unified (created in UNIFIED_ONLY) keeps its id once the emergency
rollback has replayed it into legacy: a status change answers with the id every read
gives (found by a probe: LEGACY_ONLY answered with the id derived from the new legacy
row, a second id for the same transaction)."""

from __future__ import annotations

import pytest

from conftest import Database
from support.adapters import adapter_in
from unistatus import DualWriteMode
from unistatus.migration.rollback import emergency_rollback


@pytest.mark.parametrize("by_legacy_ref", [False, True], ids=["utx-id", "legacy-ref"])
def test_a_replayed_transaction_keeps_its_id_in_legacy_only(
    db: Database, by_legacy_ref: bool
) -> None:
    born = adapter_in(db, DualWriteMode.UNIFIED_ONLY).create_transaction(
        "WALLET_CASHOUT", 7, "12.50", "USD"
    )
    assert born.overall_success and born.entity_id is not None
    emergency_rollback(db.engine, db.settings, actor="oncall", reason="drill")
    a = adapter_in(db, DualWriteMode.LEGACY_ONLY)
    status, meta = a.get_transaction_status(born.entity_id)
    assert status is not None and meta["transaction_id"] == born.entity_id
    legacy_id = meta["legacy_id"]
    assert legacy_id is not None
    ref = f"cashout:{legacy_id}" if by_legacy_ref else born.entity_id
    changed = a.update_status(ref, "PROCESSING", "sent", "app")
    assert changed.overall_success, changed.error
    assert changed.entity_id == born.entity_id
    assert changed.legacy_entity_id == legacy_id
    _, meta = a.get_transaction_status(ref)
    assert meta["transaction_id"] == born.entity_id
