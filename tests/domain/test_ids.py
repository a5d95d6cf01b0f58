"""UTX ids: only those unistatus can make parse; any other is malformed, not unknown.

A UTX id's first digit says where it came from: a legacy system's digit (1 cashout,
2 escrow, 3 exchange) followed by that row's id, or 9 for a transaction born unified.
An id with any other digit can never exist, so it is refused as malformed (422 at the
API), like any other malformed id, never looked up and answered "not found" (404).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from conftest import Database
from unistatus.api.service import create_app
from unistatus.domain.ids import (
    MAX_LEGACY_ID,
    LegacyRef,
    UtxId,
    derive_utx_id,
    new_unified_id,
    parse_entity_id,
)
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InvalidIdentifierError

WRITER = "writer-token-for-id-tests"

# A digit that names no system, and a system's digit with legacy id 0 (ids start at 1).
NEVER_MADE = [f"UTX{digit}00000000000001" for digit in "045678"] + ["UTX100000000000000"]


@pytest.mark.parametrize("text", NEVER_MADE)
def test_a_utx_id_unistatus_never_makes_is_malformed(text: str) -> None:
    with pytest.raises(InvalidIdentifierError, match="malformed id"):
        parse_entity_id(text)
    with pytest.raises(InvalidIdentifierError, match="malformed id"):
        UtxId(text)


@pytest.mark.parametrize("system", list(LegacySystemType))
def test_every_utx_id_unistatus_makes_parses(system: LegacySystemType) -> None:
    for legacy_id in (1, MAX_LEGACY_ID):
        ref = parse_entity_id(derive_utx_id(system, legacy_id))
        assert isinstance(ref, UtxId) and ref.derived_ref == LegacyRef(system, legacy_id)
    for born in (new_unified_id(), "UTX900000000000000", "UTX999999999999999"):
        ref = parse_entity_id(born)
        assert isinstance(ref, UtxId) and ref.derived_ref is None


@pytest.mark.parametrize("text", ["UTX400000000000001", "UTX000000000000001"])
def test_the_api_refuses_a_utx_id_with_no_system_as_malformed(db: Database, text: str) -> None:
    settings = db.settings.model_copy(update={"writer_token": WRITER})
    body = {"status": "PROCESSING", "reason": "r", "triggered_by": "t"}
    with TestClient(create_app(settings, db.engine)) as client:
        answers = [
            client.get(f"/api/v1/transactions/{text}"),
            client.post(
                f"/api/v1/transactions/{text}/status",
                json=body,
                headers={"Authorization": f"Bearer {WRITER}"},
            ),
        ]
    for r in answers:
        assert (r.status_code, r.json()["error"]) == (422, "InvalidIdentifierError"), r.text
        assert "malformed id" in r.json()["detail"]
