"""The HTTP service with a legacy table narrower than the unified row: a value its columns
cannot hold is the client's error (422), not an outage (503), and the error rate the
alerts and the automatic rollback watch does not move
(tests/adapter/test_legacy_shared_columns.py has the library's side)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Database
from support.legacy_columns import narrow_payouts
from unistatus.api.service import create_app
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.observe.stats import window

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD: dict[str, Any] = {
    "transaction_type": "WALLET_CASHOUT",
    "user_id": 7,
    "amount": "12.50",
    "currency": "USD",
}
REFUSED = [
    ({"currency": "USDT"}, "'currency'"),
    ({"amount": "0.001"}, "'amount'"),
    ({"user_id": 3_000_000_000}, "'owner_id'"),  # past a 4-byte INTEGER (PostgreSQL)
]


@pytest.mark.parametrize(("given", "column"), REFUSED)
def test_a_value_past_the_legacy_column_is_a_422_and_no_error(
    db: Database, given: dict[str, Any], column: str
) -> None:
    if "user_id" in given and db.backend == "sqlite":
        pytest.skip("SQLite's INTEGER holds 8 bytes")
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    with narrow_payouts(db) as settings:
        app = create_app(settings.model_copy(update={"admin_token": TOKEN}), db.engine)
        with TestClient(app) as client:
            r = client.post("/api/v1/transactions", json={**GOOD, **given}, headers=AUTH)
            assert r.status_code == 422, r.text
            assert column in r.text
            ok = client.post("/api/v1/transactions", json=GOOD, headers=AUTH)
            assert ok.status_code == 201, ok.text
            stats = app.state.service.adapter().stats
            assert stats is not None and stats.flush() > 0
    seen = window(db.engine, 600)
    assert (seen.errors, seen.error_rate) == (0, 0.0)
