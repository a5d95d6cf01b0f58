"""A hostile or broken client's request body: refused over ``max_request_bytes`` (413),
declared or streamed, before it is read whole; nothing written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Database
from unistatus.api.service import create_app

TOKEN = "s3cret-token"
LIMIT = 4096


@pytest.fixture
def client(sqlite_db: Database) -> Iterator[TestClient]:
    settings = sqlite_db.settings.model_copy(
        update={"admin_token": TOKEN, "max_request_bytes": LIMIT}
    )
    with TestClient(create_app(settings, sqlite_db.engine)) as c:
        yield c


def create(metadata: dict[str, Any] | None = None) -> bytes:
    body = {"transaction_type": "WALLET_CASHOUT", "user_id": 7, "amount": "5", "currency": "USD"}
    return json.dumps({**body, **({"metadata": metadata} if metadata else {})}).encode()


HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def test_a_body_over_the_limit_is_refused_with_413(sqlite_db: Database, client: TestClient) -> None:
    big = create({"pad": "x" * LIMIT})
    r = client.post("/api/v1/transactions", content=big, headers=HEADERS)
    assert r.status_code == 413
    assert r.json()["error"] == "InputError" and str(LIMIT) in r.json()["detail"]
    assert sqlite_db.count("cashouts") == 0


def test_a_streamed_body_over_the_limit_is_refused_too(
    sqlite_db: Database, client: TestClient
) -> None:
    """No Content-Length (a chunked body): counted as it arrives."""

    def chunks() -> Iterator[bytes]:
        yield create({"pad": "x" * LIMIT})

    r = client.post("/api/v1/transactions", content=chunks(), headers=HEADERS)
    assert r.status_code == 413
    assert sqlite_db.count("cashouts") == 0


def test_a_body_within_the_limit_is_served(sqlite_db: Database, client: TestClient) -> None:
    r = client.post("/api/v1/transactions", content=create({"note": "ok"}), headers=HEADERS)
    assert r.status_code == 201, r.text
    assert client.get("/health").status_code == 200
