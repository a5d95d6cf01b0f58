"""Every answer the service gives is one its OpenAPI schema declares: the status code is
listed for the operation and the body validates against the schema given for it.

A client generated from ``/openapi.json`` (or one read by a person) must be able to
decode a 404, a refused transition, a refused token or a replayed Idempotency-Key
without guessing: each request below is one a client really makes, checked with
schemathesis's conformance checks against the app's own schema.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from unistatus.api.service import create_app

ADMIN = "contract-admin-token"
WRITER = "contract-writer-token"
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def api(sqlite_db: Any) -> Any:
    settings_ = sqlite_db.settings.model_copy(update={"admin_token": ADMIN, "writer_token": WRITER})
    app = create_app(settings_, sqlite_db.engine)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    app.state.service.close()


def _call(api: Any, method: str, path: str, token: str | None = ADMIN, **parts: Any) -> Any:
    """Make one request through the schema's operation and validate the answer."""
    case = api[path][method].Case(**parts)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(parts.get("headers") or {})
    response = case.call(headers=headers)
    case.validate_response(response, checks=CONFORMANCE)
    return response


CREATE = {
    "transaction_type": "WALLET_CASHOUT",
    "user_id": 7,
    "amount": "10.00",
    "currency": "USD",
}


def test_a_create_its_replay_and_its_errors_are_declared(api: Any) -> None:
    path = "/api/v1/transactions"
    key = {"Idempotency-Key": "contract-1"}
    first = _call(api, "POST", path, body=CREATE, headers=key)
    assert first.status_code == 201, first.text
    replay = _call(api, "POST", path, body=CREATE, headers=key)
    assert replay.status_code == 200, replay.text  # the first result, not a second row
    other_body = _call(api, "POST", path, body={**CREATE, "user_id": 8}, headers=key)
    assert other_body.status_code == 422, other_body.text
    assert _call(api, "POST", path, token=None, body=CREATE).status_code == 401
    assert _call(api, "POST", path, token="not-a-token", body=CREATE).status_code == 401
    unknown_status = _call(api, "POST", path, body={**CREATE, "status": "NOT_A_STATUS"})
    assert unknown_status.status_code == 422, unknown_status.text


def test_a_status_change_and_its_errors_are_declared(api: Any) -> None:
    created = _call(api, "POST", "/api/v1/transactions", body=CREATE).json()
    entity = created["entity_id"]
    path = "/api/v1/transactions/{entity_id}/status"
    ids = {"entity_id": entity}
    change = {"status": "PROCESSING", "reason": "contract"}
    assert _call(api, "POST", path, path_parameters=ids, body=change).status_code == 200
    refused = _call(
        api, "POST", path, path_parameters=ids, body={"status": "PENDING", "reason": "back"}
    )
    assert refused.status_code == 409, refused.text
    forced = _call(
        api,
        "POST",
        path,
        token=WRITER,
        path_parameters=ids,
        body={"status": "PENDING", "reason": "back", "force": True},
    )
    assert forced.status_code == 403, forced.text
    missing = _call(
        api, "POST", path, path_parameters={"entity_id": "UTX999999999999999"}, body=change
    )
    assert missing.status_code == 404, missing.text
    read = _call(api, "GET", "/api/v1/transactions/{entity_id}", path_parameters=ids)
    assert read.status_code == 200, read.text
    gone = _call(
        api,
        "GET",
        "/api/v1/transactions/{entity_id}",
        path_parameters={"entity_id": "UTX999999999999999"},
    )
    assert gone.status_code == 404, gone.text


def test_the_control_endpoints_errors_are_declared(api: Any) -> None:
    mode = _call(api, "PUT", "/api/v1/control/mode", token=WRITER, body={"mode": "LEGACY_ONLY"})
    assert mode.status_code == 403, mode.text
    no_reason = _call(api, "PUT", "/api/v1/control/mode", body={"mode": "UNIFIED_ONLY"})
    assert no_reason.status_code in (409, 422), no_reason.text
    gated = _call(api, "POST", "/api/v1/control/phase/advance", body={"reason": "contract"})
    assert gated.status_code in (200, 409), gated.text
