"""A hostile or broken client's request body: refused over ``max_request_bytes`` (413),
declared or streamed, before it is read whole; nothing written. One within the limit
that is invalid many times over gets a 422 of a few lines, not one entry per error."""

from __future__ import annotations

import asyncio
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


def test_a_422_lists_its_first_errors_and_counts_the_rest(sqlite_db: Database) -> None:
    """75,000 unknown fields in a body under the default limit (1 MiB): the 422 lists
    the first 20 and counts the rest, instead of 75,000 entries (6.7 MB, ~1.5 s)."""
    settings = sqlite_db.settings.model_copy(update={"admin_token": TOKEN})
    many = json.loads(create())
    many.update({f"f{i}": 0 for i in range(75_000)})
    raw = json.dumps(many).encode()
    assert len(raw) < settings.max_request_bytes
    with TestClient(create_app(settings, sqlite_db.engine)) as c:
        r = c.post("/api/v1/transactions", content=raw, headers=HEADERS)
        few = c.post(
            "/api/v1/transactions", json={**json.loads(create()), "a": 1, "b": 2}, headers=HEADERS
        )
    assert r.status_code == 422 and len(r.content) < 10_000, (r.status_code, len(r.content))
    body = r.json()
    assert body["error"] == "InputError"
    assert [e["loc"] for e in body["detail"]] == [["body", f"f{i}"] for i in range(20)]
    assert body["errors_not_listed"] == 75_000 - 20
    # A few errors are all listed, as before.
    assert few.status_code == 422 and "errors_not_listed" not in few.json(), few.text
    assert [e["loc"] for e in few.json()["detail"]] == [["body", "a"], ["body", "b"]]
    assert sqlite_db.count("cashouts") == 0


@pytest.mark.parametrize("authorization", [b"Bearer not-the-token", None])
def test_a_caller_without_a_valid_token_has_no_byte_of_its_body_read(
    sqlite_db: Database, authorization: bytes | None
) -> None:
    """The token is checked from the headers before anything reads the body: a client
    that is not who it claims streams its body in vain (401; the server neither waits
    for nor holds a byte of it). The app is called as the server calls it (ASGI), so
    what it asks of the connection is seen."""
    settings = sqlite_db.settings.model_copy(
        update={"admin_token": TOKEN, "max_request_bytes": LIMIT}
    )
    app = create_app(settings, sqlite_db.engine)
    asked: list[str] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        asked.append("receive")
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json")]  # chunked: no Content-Length
    if authorization is not None:
        headers.append((b"authorization", authorization))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/transactions",
        "raw_path": b"/api/v1/transactions",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 401, sent
    assert asked == [], f"{len(asked)} part(s) of the body read before the token's 401"
    assert sqlite_db.count("cashouts") == 0


@pytest.mark.parametrize("authorization", ["Bearer not-the-token", None])
def test_a_declared_length_over_the_limit_without_a_valid_token_is_a_401(
    client: TestClient, authorization: str | None
) -> None:
    """The token is decided before the body: a caller refused for its token gets that
    401 whatever it sent (docs/runbook.md). A Content-Length over the limit answered 413
    first, telling a caller without a token about the service's limit (exploratory
    review)."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    big = create({"pad": "x" * LIMIT})
    r = client.post("/api/v1/transactions", content=big, headers=headers)
    assert r.status_code == 401, r.text
