"""The HTTP service with a config that maps REFUND_REQUESTED (a legacy value added later):
a status change to it is accepted like any legacy value; a bad config stops the start."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import Database
from unistatus.api.service import create_app
from unistatus.config import CONFIG_FILE_ENV
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import ConfigError

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: Database, mapping: str) -> None:
    path = tmp_path / "unistatus.toml"
    path.write_text(f'database_url = "{db.url}"\nadmin_token = "{TOKEN}"\n{mapping}')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))


def test_the_service_accepts_the_configured_value(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(tmp_path, monkeypatch, db, '[mapping.CASHOUT]\nREFUND_REQUESTED = "CANCELLED"\n')
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    with TestClient(create_app(engine=db.engine)) as client:
        body = {
            "transaction_type": "WALLET_CASHOUT",
            "user_id": 7,
            "amount": "5",
            "currency": "USD",
        }
        created = client.post("/api/v1/transactions", json=body, headers=AUTH).json()
        ref = f"cashout:{created['legacy_entity_id']}"
        r = client.post(
            f"/api/v1/transactions/{ref}/status",
            json={"status": "REFUND_REQUESTED", "reason": "user asked", "triggered_by": "t"},
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["legacy_status"]) == ("CANCELLED", "REFUND_REQUESTED")
        assert client.get(f"/api/v1/transactions/{ref}").json()["status"] == "CANCELLED"


def test_a_bad_mapping_stops_the_service_at_start(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(tmp_path, monkeypatch, db, '[mapping.CASHOUT]\nREFUND_REQUESTED = "REFUNDED"\n')
    with pytest.raises(ConfigError, match="unknown unified status 'REFUNDED'"):
        create_app(engine=db.engine)
