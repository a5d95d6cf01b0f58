"""A transaction born unified (created in UNIFIED_ONLY) keeps its id once the emergency
rollback has replayed it into legacy: a status change answers with the id every read
gives (found by a probe: LEGACY_ONLY answered with the id derived from the new legacy
row, a second id for the same transaction)."""

from __future__ import annotations

import pytest

from conftest import Database
from support.adapters import adapter_in
from unistatus import DualWriteMode
from unistatus.domain.ids import derive_utx_id
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.rollback import emergency_rollback


@pytest.mark.parametrize("by", ["utx-id", "legacy-ref", "derived-id"])
def test_a_replayed_transaction_keeps_its_id_in_legacy_only(db: Database, by: str) -> None:
    """By its id, its legacy ref, or the id its legacy row's id derives (the locked path
    answered with that one as given: a review)."""
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
    ref = {
        "utx-id": born.entity_id,
        "legacy-ref": f"cashout:{legacy_id}",
        "derived-id": derive_utx_id(LegacySystemType.CASHOUT, legacy_id),
    }[by]
    assert ref != born.entity_id or by == "utx-id"
    changed = a.update_status(ref, "PROCESSING", "sent", "app")
    assert changed.overall_success, changed.error
    assert changed.entity_id == born.entity_id
    assert changed.legacy_entity_id == legacy_id
    _, meta = a.get_transaction_status(ref)
    assert meta["transaction_id"] == born.entity_id
