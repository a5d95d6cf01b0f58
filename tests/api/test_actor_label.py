"""The API's actor label cannot imitate another actor.

The history records who made a change as ``token:<name> (<label>)``: the token's name,
then the caller's own label (``triggered_by``; ``actor`` on the control endpoints) in
parentheses. A label holding a parenthesis could close that group and open another
(``admin) (x`` reads as ``token:writer (admin) (x)``), so it is refused with a 422 that
says why, before anything is written or tried on the database; every other label is
recorded as it always was.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import Database
from support.adapters import adapter_in, snapshot
from unistatus.api.service import create_app
from unistatus.domain.statuses import DualWriteMode

ADMIN = "admin-token-0123456789"
WRITER = "writer-token-0123456789"
FORGED = ["admin) (x", "admin)", "(admin", "x (token:admin)"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def cashout(db: Database) -> str:
    a = adapter_in(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    return f"cashout:{a.create_transaction('WALLET_CASHOUT', 1, '5', 'USD').legacy_entity_id}"


def client(db: Database) -> TestClient:
    tokens = {"admin_token": ADMIN, "writer_token": WRITER}
    return TestClient(create_app(db.settings.model_copy(update=tokens), db.engine))


def actors(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        sql = "SELECT triggered_by FROM unified_status_history ORDER BY id"
        return list(conn.execute(sa.text(sql)).scalars())


def refused(r: Any, field: str) -> None:
    """A 422 of bad input naming the field and the parentheses: not a database failure."""
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "InputError", body
    (issue,) = body["detail"]
    assert issue["loc"][-1] == field and "parenthes" in issue["msg"], issue


@pytest.mark.parametrize("label", FORGED)
def test_a_label_with_a_parenthesis_is_refused(db: Database, cashout: str, label: str) -> None:
    before = snapshot(db)
    with client(db) as c:
        update = {"status": "PROCESSING", "reason": "sent", "triggered_by": label}
        refused(
            c.post(f"/api/v1/transactions/{cashout}/status", json=update, headers=bearer(WRITER)),
            "triggered_by",
        )
        create = {
            "transaction_type": "WALLET_CASHOUT",
            "user_id": 9,
            "amount": "3",
            "currency": "EUR",
            "triggered_by": label,
        }
        refused(c.post("/api/v1/transactions", json=create, headers=bearer(WRITER)), "triggered_by")
        mode = {"mode": "DUAL_WRITE_LEGACY_PRIMARY", "reason": "go", "actor": label}
        refused(c.put("/api/v1/control/mode", json=mode, headers=bearer(ADMIN)), "actor")
        assert c.get("/health").status_code == 200  # the database is not blamed
    assert snapshot(db) == before


def test_other_labels_are_recorded_as_they_were(db: Database, cashout: str) -> None:
    with client(db) as c:
        for status, label in (("PROCESSING", "svc"), ("SUCCESS", "billing-job #7: retry [2]")):
            body = {"status": status, "reason": "sent", "triggered_by": label}
            r = c.post(f"/api/v1/transactions/{cashout}/status", json=body, headers=bearer(WRITER))
            assert r.status_code == 200, r.text
    assert actors(db)[-2:] == ["token:writer (svc)", "token:writer (billing-job #7: retry [2])"]
