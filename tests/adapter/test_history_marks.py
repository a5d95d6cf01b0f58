"""unistatus's marks on a history row are kept apart from the caller's metadata.

Under ``primary_wins`` a change whose legacy side was refused is marked in its history
row's metadata. The marks live under one reserved key (``"unistatus"``), so a caller's
own keys of the same names (``flag``, ``legacy_error``, ``repair_queued``) are kept as
the caller wrote them, and a caller passing the reserved key is refused before anything
is written.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import Database
from support.missing_legacy import MARKED, refused_creates, rows
from support.refusing import refusing_inserts
from unistatus.errors import InputError

CALLERS = {"flag": "vip", "legacy_error": "mine", "repair_queued": "no", "ticket": 7}


def metas(db: Database, utx: str) -> list[Any]:
    """The metadata of ``utx``'s history rows, oldest first (SQLite's JSON is text)."""
    sql = "SELECT metadata FROM unified_status_history WHERE transaction_id = :e ORDER BY id"
    return [json.loads(m) if isinstance(m, str) else m for (m,) in rows(db, sql, e=utx)]


def test_a_refused_change_keeps_the_callers_keys_beside_the_mark(db: Database) -> None:
    a, _, (utx,) = refused_creates(db)
    r = a.update_status(utx, "PROCESSING", "sent", "app", metadata=dict(CALLERS))
    assert r.overall_success and r.has_inconsistency
    meta = metas(db, utx)[-1]
    assert {k: meta.get(k) for k in CALLERS} == CALLERS, meta
    mark = meta.get("unistatus") or {}
    assert (mark.get("flag"), mark.get("repair_queued")) == ("legacy_refused", True), meta
    assert "no legacy row" in mark["legacy_error"]


def test_a_refused_create_keeps_the_callers_keys_beside_the_mark(db: Database) -> None:
    a, _, _ = refused_creates(db)
    with refusing_inserts(db, "cashouts", MARKED):
        r = a.create_transaction("WALLET_CASHOUT", MARKED, "1", "USD", metadata=dict(CALLERS))
    assert r.overall_success and r.has_inconsistency
    (meta,) = metas(db, str(r.entity_id))
    assert {k: meta.get(k) for k in CALLERS} == CALLERS, meta
    assert (meta.get("unistatus") or {}).get("flag") == "legacy_refused", meta


def test_the_reserved_key_is_refused_before_anything_is_written(db: Database) -> None:
    a, whole, _ = refused_creates(db)
    before = rows(db, "SELECT count(*) FROM unified_status_history")
    forged = {"unistatus": {"flag": "legacy_refused"}}
    with pytest.raises(InputError, match=r"metadata.*'unistatus' is reserved"):
        a.update_status(whole, "PROCESSING", "sent", "app", metadata=forged)
    with pytest.raises(InputError, match=r"metadata.*'unistatus' is reserved"):
        a.create_transaction("WALLET_CASHOUT", 1, "1", "USD", metadata=forged)
    assert rows(db, "SELECT count(*) FROM unified_status_history") == before
    # Nested under a key of the caller's, the name is the caller's own.
    ok = a.update_status(whole, "PROCESSING", "sent", "app", metadata={"x": forged})
    assert ok.overall_success


def test_the_api_refuses_the_reserved_key_as_bad_input(db: Database) -> None:
    from fastapi.testclient import TestClient

    from unistatus.api.service import create_app

    _, whole, _ = refused_creates(db)
    token = "writer-token-0123456789"
    app = create_app(db.settings.model_copy(update={"writer_token": token}), db.engine)
    body = {"status": "PROCESSING", "reason": "sent", "metadata": {"unistatus": {"flag": "x"}}}
    with TestClient(app) as client:
        r = client.post(
            f"/api/v1/transactions/{whole}/status",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
    assert r.status_code == 422 and r.json()["error"] == "InputError", r.text
    assert "'unistatus' is reserved" in r.text, r.text
