"""Who may write through the HTTP API (issue 10, section 2).

Transaction writes need a writer (or admin) token and are disabled when none is
configured; ``force`` needs the admin token; the history names the token that made a
change, never its value; a refused request writes nothing; a 503 names no host, port
or SQL, nor does a 200 whose secondary side the database refused.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import Database, _drop_database, _throwaway_database
from support.adapters import adapter_in, snapshot
from support.refusing import refuse
from unistatus.api.service import create_app
from unistatus.config import load_settings
from unistatus.db.engine import create_engine
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import ConfigError
from unistatus.observe.alerts import Monitor

ADMIN = "admin-token-0123456789"
WRITER = "writer-token-0123456789"
M = DualWriteMode


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


HEADERS: dict[str, dict[str, str]] = {
    "no header": {},
    "wrong token": bearer("not-the-token"),
    "basic auth": {"Authorization": f"Basic {WRITER}"},
    "writer token": bearer(WRITER),
    "admin token": bearer(ADMIN),
}


@pytest.fixture
def cashout(db: Database) -> str:
    """A PENDING cashout written on both sides; its legacy reference."""
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    return f"cashout:{a.create_transaction('WALLET_CASHOUT', 1, '5', 'USD').legacy_entity_id}"


def client_with(db: Database, **tokens: Any) -> TestClient:
    return TestClient(create_app(db.settings.model_copy(update=tokens), db.engine))


def write(client: TestClient, endpoint: str, ref: str, headers: dict[str, str]) -> Any:
    if endpoint == "create":
        body = {
            "transaction_type": "WALLET_CASHOUT",
            "user_id": 9,
            "amount": "3",
            "currency": "EUR",
        }
        return client.post("/api/v1/transactions", json=body, headers=headers)
    body = {"status": "PROCESSING", "reason": "sent", "triggered_by": "svc"}
    return client.post(f"/api/v1/transactions/{ref}/status", json=body, headers=headers)


def history(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM unified_status_history ORDER BY id"))
        return [dict(r._mapping) for r in rows]


ENDPOINTS = ["create", "update"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("header", list(HEADERS))
def test_writes_are_disabled_when_no_token_is_configured(
    db: Database, cashout: str, endpoint: str, header: str
) -> None:
    before = snapshot(db)
    with client_with(db, admin_token=None, writer_token=None) as client:
        r = write(client, endpoint, cashout, HEADERS[header])
    assert r.status_code == 403, r.text
    assert "disabled" in r.json()["detail"] and "UNISTATUS_WRITER_TOKEN" in r.json()["detail"]
    assert snapshot(db) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("no header", 401),
        ("wrong token", 401),
        ("basic auth", 401),
        ("writer token", 200),
        ("admin token", 200),
    ],
)
def test_writes_need_a_writer_or_admin_token(
    db: Database, cashout: str, endpoint: str, header: str, expected: int
) -> None:
    before = snapshot(db)
    with client_with(db, admin_token=ADMIN, writer_token=WRITER) as client:
        r = write(client, endpoint, cashout, HEADERS[header])
    if expected == 401:
        assert r.status_code == 401, r.text
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert snapshot(db) == before
        return
    assert r.status_code in (200, 201), r.text
    assert snapshot(db) != before
    name = "writer" if header == "writer token" else "admin"
    last = history(db)[-1]
    assert last["triggered_by"] == (
        f"token:{name} (svc)" if endpoint == "update" else f"token:{name}"
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_admin_token_alone_enables_writes_for_admins_only(
    db: Database, cashout: str, endpoint: str
) -> None:
    before = snapshot(db)
    with client_with(db, admin_token=ADMIN, writer_token=None) as client:
        assert write(client, endpoint, cashout, bearer(WRITER)).status_code == 401
        assert snapshot(db) == before
        assert write(client, endpoint, cashout, bearer(ADMIN)).status_code in (200, 201)


def test_force_needs_the_admin_token(db: Database, cashout: str) -> None:
    body = {"status": "SUCCESS", "reason": "paid out by hand", "force": True}
    before = snapshot(db)
    with client_with(db, admin_token=ADMIN, writer_token=WRITER) as client:
        for headers in ({}, bearer("wrong"), bearer(WRITER)):
            r = client.post(f"/api/v1/transactions/{cashout}/status", json=body, headers=headers)
            assert r.status_code in (401, 403), r.text
        assert "admin" in r.json()["detail"]
        assert snapshot(db) == before
        r = client.post(f"/api/v1/transactions/{cashout}/status", json=body, headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    last = history(db)[-1]
    assert last["to_status"] == "SUCCESS" and last["override"] in (True, 1)
    assert last["triggered_by"] == "token:admin"


def test_the_history_names_the_token_never_its_value(db: Database, cashout: str) -> None:
    from unistatus.config import ApiToken

    tokens = [ApiToken(name="checkout-svc", token="checkout-secret-value-42", role="writer")]
    with client_with(db, api_tokens=tokens) as client:
        r = client.post(
            f"/api/v1/transactions/{cashout}/status",
            json={"status": "PROCESSING", "reason": "sent", "triggered_by": "admin"},
            headers=bearer("checkout-secret-value-42"),
        )
        assert r.status_code == 200, r.text
        # A caller cannot pass itself off as another token: its label follows the name.
        r = client.post(
            f"/api/v1/transactions/{cashout}/status",
            json={"status": "SUCCESS", "reason": "x", "force": True},
            headers=bearer("checkout-secret-value-42"),
        )
        assert r.status_code == 403
    rows = history(db)
    assert rows[-1]["triggered_by"] == "token:checkout-svc (admin)"
    assert not any("checkout-secret-value-42" in repr(row) for row in rows)


def test_a_writer_token_cannot_use_the_control_endpoints(db: Database) -> None:
    with client_with(db, admin_token=ADMIN, writer_token=WRITER) as client:
        r = client.put(
            "/api/v1/control/mode",
            json={"mode": "DUAL_WRITE_LEGACY_PRIMARY", "reason": "go"},
            headers=bearer(WRITER),
        )
    assert r.status_code == 403 and "admin" in r.json()["detail"]


def test_reads_stay_open(db: Database, cashout: str) -> None:
    with client_with(db, admin_token=None, writer_token=None) as client:
        assert client.get(f"/api/v1/transactions/{cashout}").status_code == 200
        assert client.get("/api/v1/status").status_code == 200


def test_tokens_must_tell_clients_and_roles_apart() -> None:
    from unistatus.api.access import authenticate

    with pytest.raises(ConfigError, match="must all differ"):
        load_settings(admin_token="same", writer_token="same")
    with pytest.raises(ConfigError, match="taken"):
        load_settings(api_tokens=[{"name": "admin", "token": "t1"}])
    with pytest.raises(ConfigError, match="printable ASCII"):
        load_settings(writer_token="tök")
    with pytest.raises(ConfigError, match="same name"):
        load_settings(api_tokens=[{"name": "a", "token": "t1"}, {"name": "a", "token": "t2"}])
    settings = load_settings(
        admin_token="adm", api_tokens=[{"name": "ops", "token": "o", "role": "admin"}]
    )
    assert authenticate(settings, "o") == authenticate(settings, "o")
    who = authenticate(settings, "o")
    assert who is not None and (who.name, who.role) == ("ops", "admin")
    assert authenticate(settings, "") is None and authenticate(settings, None) is None
    assert authenticate(settings, "ad") is None and authenticate(settings, "adm\n") is None


# --- 503 bodies, and the error of a write that stood -----------------------------------


SECRET = "Pw-0f-the-db"


@pytest.fixture
def unreachable() -> Iterator[sa.Engine]:
    engine = create_engine(
        f"postgresql://unistatus:{SECRET}@127.0.0.1:1/payments?sslpassword={SECRET}x"
        "&connect_timeout=2"
    )
    yield engine
    engine.dispose()


def _no_server_detail(text: str) -> None:
    for leak in (SECRET, "127.0.0.1", "port 1", "connection to server", "SELECT", "INSERT"):
        assert leak not in text, (leak, text)


def test_503_bodies_name_no_host_port_or_sql(
    unreachable: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(database_url="sqlite://", writer_token=WRITER)
    caplog.set_level(logging.ERROR, logger="unistatus")
    with TestClient(create_app(settings, unreachable)) as client:
        responses = [
            client.get("/health"),
            client.post(
                "/api/v1/transactions",
                json={"transaction_type": "ESCROW", "user_id": 1, "amount": "1", "currency": "USD"},
                headers=bearer(WRITER),
            ),
        ]
        status = client.get("/api/v1/status")
    for r in responses:
        assert r.status_code == 503, r.text
        _no_server_detail(r.text)
        assert "error id" in r.text
    _no_server_detail(status.text)
    # A refused write tells when to retry (none before: a probe); /health is a report.
    assert responses[1].headers.get("retry-after") == "2", responses[1].headers
    # The log keeps the detail (the password redacted), under the id the client got.
    error_id = responses[1].json()["error_id"]
    logged = [rec.getMessage() for rec in caplog.records if error_id in rec.getMessage()]
    assert logged and "127.0.0.1" in logged[0] and SECRET not in logged[0]


def test_a_failed_write_503_carries_no_sql(sqlite_db: Database) -> None:
    adapter_in(sqlite_db, M.DUAL_WRITE_LEGACY_PRIMARY)
    with sqlite_db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE unified_status_history")
    settings = sqlite_db.settings.model_copy(update={"writer_token": WRITER})
    with TestClient(create_app(settings, sqlite_db.engine)) as client:
        r = client.post(
            "/api/v1/transactions",
            json={"transaction_type": "ESCROW", "user_id": 1, "amount": "1", "currency": "USD"},
            headers=bearer(WRITER),
        )
    assert r.status_code == 503, r.text
    _no_server_detail(r.text)
    assert "unified_status_history" not in r.text and "error id" in r.json()["detail"]
    assert r.json()["result"]["overall_success"] is False


IBAN = "DE89370400440532013000"


def test_a_write_queued_for_repair_shows_an_error_id_not_the_database_error(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """fallback=primary_wins: the database refuses the secondary (unified) side of bob's
    change to alice's transaction. The change stands (200), queued for repair, and the
    body says so under an error id: the database's own words stay in the log, for
    PostgreSQL's quote the whole row (alice's user, amount, metadata) and name the table
    and the constraint. So for a create too, its replay by key, and the stored key."""
    tokens = [
        {"name": "alice", "token": "alice-token", "role": "writer"},
        {"name": "bob", "token": "bob-token", "role": "writer"},
    ]
    settings = db.settings.model_copy(
        update={
            "fallback": "primary_wins",
            "api_tokens": load_settings(api_tokens=tokens).api_tokens,
        }
    )
    adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    caplog.set_level(logging.WARNING, logger="unistatus")
    body = {
        "transaction_type": "WALLET_CASHOUT",
        "user_id": 4242,
        "amount": "13.37",
        "currency": "USD",
        "metadata": {"iban": IBAN},
    }
    with TestClient(create_app(settings, db.engine)) as client:
        created = client.post("/api/v1/transactions", json=body, headers=bearer("alice-token"))
        assert created.status_code == 201, created.text
        update = f"/api/v1/transactions/{created.json()['entity_id']}/status"
        with refuse(db, "unified_transactions", "PROCESSING") as refused_update:
            changed = client.post(
                update, json={"status": "PROCESSING", "reason": "x"}, headers=bearer("bob-token")
            )
        keyed = {"Idempotency-Key": "k-1", **bearer("alice-token")}
        with refuse(db, "unified_transactions", "PENDING") as refused_create:
            first = client.post("/api/v1/transactions", json=body, headers=keyed)
            again = client.post("/api/v1/transactions", json=body, headers=keyed)
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    for r, code, constraint in ((changed, 200, refused_update), (first, 201, refused_create)):
        assert r.status_code == code, r.text
        result = r.json()
        assert result["primary_success"] and not result["secondary_success"], r.text
        assert result["has_inconsistency"], r.text
        for leak in (IBAN, "unified_transactions", constraint, "DETAIL", "Failing row"):
            assert leak not in r.text, (leak, r.text)
        error_id = result["error_id"]
        assert re.fullmatch(r"[0-9a-f]{12}", error_id), r.text
        assert "queued for repair" in result["error"] and error_id in result["error"]
        # The log keeps the database's words, under the id the client got.
        assert [line for line in logged.splitlines() if error_id in line and constraint in line]
    assert again.status_code == 200 and again.json()["replayed"], again.text
    for leak in (IBAN, "unified_transactions", refused_create, "DETAIL"):
        assert leak not in again.text, (leak, again.text)
    with db.engine.connect() as conn:
        stored = conn.execute(
            sa.text(f"SELECT * FROM {db.table('unistatus_idempotency_keys')}")
        ).all()
    assert len(stored) == 1 and refused_create not in repr(stored) and IBAN not in repr(stored)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def uninitialised(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[sa.Engine]:
    """A database that answers but has no unistatus tables: every read of them fails."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'blank.db'}")
        yield engine
        engine.dispose()
        return
    request.getfixturevalue("postgres_url")  # the server is there (else skipped)
    admin, url, name = _throwaway_database("_blank")
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        _drop_database(admin, name)


SQL_LEAKS = ("SELECT", "FROM", "LINE", "[SQL", "sqlalche.me", "unistatus_", "no such table")


def test_reads_that_fail_show_only_an_error_id(
    uninitialised: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The open endpoints say what is unknown, never why in SQL: the log has the why,
    under the error id the body gives."""
    settings = load_settings(database_url="sqlite://", admin_token=ADMIN)
    caplog.set_level(logging.ERROR, logger="unistatus")
    with TestClient(create_app(settings, uninitialised)) as client:
        health, status = client.get("/health"), client.get("/api/v1/status")
    assert health.status_code == status.status_code == 200
    checks, body = health.json()["checks"], status.json()
    unknown = [checks["mode"], checks["phase"], checks["critical_alerts"]]
    unknown += [body["alerts"]["error"], *(v for v in body["sources"].values() if v != "ok")]
    for r in (health, status):
        for leak in SQL_LEAKS:
            assert leak not in r.text, (leak, r.text)
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    for value in unknown:
        assert re.fullmatch(r"unknown \(error id [0-9a-f]{12}\)", value), value
        assert re.search(r"error id ([0-9a-f]{12})", value)[1] in logged  # type: ignore[index]
    assert "unistatus_control" in logged


def test_every_refusal_names_its_kind_in_error(db: Database, cashout: str) -> None:
    """A script tells refusals apart by ``error``, whoever refused: the bearer check,
    the router or the body parser answer with it like unistatus's own errors do."""
    update = f"/api/v1/transactions/{cashout}/status"
    body = {"status": "PROCESSING", "reason": "sent", "triggered_by": "svc"}
    with client_with(db, admin_token=ADMIN, writer_token=WRITER) as client:
        cases = [
            (client.post(update, json=body), 401, "AuthenticationError"),
            (
                client.post(update, json={**body, "force": True}, headers=bearer(WRITER)),
                403,
                "PermissionError",
            ),
            (client.get("/api/v1/no-such-route"), 404, "NotFoundError"),
            (client.get("/api/v1/transactions/cashout:999999"), 404, "EntityNotFoundError"),
            (client.delete(update), 405, "MethodNotAllowedError"),
            (
                client.post(
                    update,
                    content=b'{"status": "\xff"}',
                    headers={**bearer(WRITER), "Content-Type": "application/json"},
                ),
                400,
                "InputError",
            ),
            (
                client.post(
                    update,
                    content=b"status=PROCESSING",
                    headers={**bearer(WRITER), "Content-Type": "application/json"},
                ),
                400,
                "InputError",
            ),
        ]
    for r, code, kind in cases:
        assert (r.status_code, r.json().get("error")) == (code, kind), r.text
        assert r.json()["detail"]
    assert cases[0][0].headers["WWW-Authenticate"] == "Bearer"


# --- the token before the body ----------------------------------------------------------

# Bodies the service would refuse, each in its own way, once it read them: a caller that
# is not who it claims must get the token's answer instead, whatever it sent.
BAD_BODIES: dict[str, tuple[bytes, dict[str, str]]] = {
    "not JSON": (b'{"reason": ', {"Content-Type": "application/json"}),
    "not UTF-8": (b'{"reason": "\xff"}', {"Content-Type": "application/json"}),
    "not the schema": (b'{"nope": 1}', {"Content-Type": "application/json"}),
    "text": (b"reason=x", {"Content-Type": "text/plain"}),
    "no content type": (b"reason=x", {}),
}


def token_routes(client: TestClient) -> list[tuple[str, str, bool]]:
    """(method, path, admin only) of every operation taking a body and a token, read from
    the OpenAPI document so that a new one is covered without being listed here."""
    routes = [
        (method.upper(), path.replace("{entity_id}", "cashout:1"), "control" in op["tags"])
        for path, operations in client.app.openapi()["paths"].items()  # type: ignore[attr-defined]
        for method, op in operations.items()
        if "requestBody" in op and op.get("security")
    ]
    assert len(routes) == 6, routes  # create, update; mode, advance, phase and emergency rollback
    return routes


@pytest.mark.parametrize("kind", list(BAD_BODIES))
def test_the_token_is_checked_before_the_body(sqlite_db: Database, kind: str) -> None:
    """No valid token: 401; no token configured: 403; a writer's token on a control
    endpoint: 403, whatever the body. A body refused before the token would tell an
    unknown caller how the service reads bodies, after parsing it for them."""
    content, content_type = BAD_BODIES[kind]
    refused, disabled = ("AuthenticationError", "Bearer"), ("PermissionError", None)
    answers: dict[tuple[str, str, str], tuple[int, str | None, str | None]] = {}
    expected: dict[tuple[str, str, str], tuple[int, str | None, str | None]] = {}

    def ask(client: TestClient, method: str, path: str, caller: str, headers: Any) -> None:
        r = client.request(method, path, content=content, headers={**headers, **content_type})
        answers[method, path, caller] = (
            r.status_code,
            r.json().get("error"),
            r.headers.get("WWW-Authenticate"),
        )

    with client_with(sqlite_db, admin_token=ADMIN, writer_token=WRITER) as client:
        for method, path, admin_only in token_routes(client):
            ask(client, method, path, "no header", {})
            ask(client, method, path, "wrong token", bearer("not-the-token"))
            ask(client, method, path, "basic auth", {"Authorization": f"Basic {WRITER}"})
            for caller in ("no header", "wrong token", "basic auth"):
                expected[method, path, caller] = (401, *refused)
            if admin_only:
                ask(client, method, path, "writer token", bearer(WRITER))
                expected[method, path, "writer token"] = (403, *disabled)
    with client_with(sqlite_db, admin_token=None, writer_token=None) as client:
        for method, path, _ in token_routes(client):
            ask(client, method, path, "none configured", bearer(WRITER))
            expected[method, path, "none configured"] = (403, *disabled)
    assert answers == expected


def test_the_body_of_a_caller_without_a_valid_token_is_not_parsed(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.requests import Request

    parsed: list[str] = []
    parse = Request.json

    async def spy(request: Request) -> Any:
        parsed.append(request.url.path)
        return await parse(request)

    monkeypatch.setattr(Request, "json", spy)
    body = {"mode": "LEGACY_ONLY", "reason": "x", "status": "PROCESSING"}
    with client_with(sqlite_db, admin_token=ADMIN, writer_token=WRITER) as client:
        for method, path, _ in token_routes(client):
            for headers in ({}, bearer("not-the-token")):
                assert client.request(method, path, json=body, headers=headers).status_code == 401
        assert parsed == []
        # The spy is where bodies are parsed: an admin's body is.
        r = client.put("/api/v1/control/mode", json={"nope": 1}, headers=bearer(ADMIN))
        assert r.status_code == 422, r.text
    assert parsed == ["/api/v1/control/mode"]


@pytest.mark.parametrize(
    ("content", "content_type", "named"),
    [
        (b"status=PROCESSING", {"Content-Type": "text/plain"}, "text/plain"),
        (b"status=PROCESSING", {}, "no Content-Type"),
        (
            b"status=PROCESSING",
            {"Content-Type": "application/x-www-form-urlencoded"},
            "application/x-www-form-urlencoded",
        ),
        (b'{"reason": "go"}', {"Content-Type": "text/plain; charset=utf-8"}, "text/plain"),
    ],
)
def test_a_body_not_sent_as_json_is_refused_as_one_that_is_not_json(
    sqlite_db: Database, content: bytes, content_type: dict[str, str], named: str
) -> None:
    """A body the service does not read as JSON gets one answer, whichever way it is not:
    400 ``InputError`` saying so (as for a JSON content type and a body that does not
    parse), not a 422 about a field when there is no field to name."""
    before = snapshot(sqlite_db)
    answers: dict[tuple[str, str], tuple[int, str | None, bool]] = {}
    with client_with(sqlite_db, admin_token=ADMIN, writer_token=WRITER) as client:
        routes = token_routes(client)
        for method, path, _ in routes:
            r = client.request(
                method, path, content=content, headers={**bearer(ADMIN), **content_type}
            )
            detail = r.json()["detail"]
            answers[method, path] = (
                r.status_code,
                r.json().get("error"),
                isinstance(detail, str) and named in detail and "application/json" in detail,
            )
        not_json = client.post(
            "/api/v1/transactions",
            content=b"status=PROCESSING",
            headers={**bearer(ADMIN), "Content-Type": "application/json"},
        )
    assert (not_json.status_code, not_json.json()["error"]) == (400, "InputError")
    assert answers == {(method, path): (400, "InputError", True) for method, path, _ in routes}
    assert snapshot(sqlite_db) == before


def test_a_body_the_parser_cannot_read_says_why(sqlite_db: Database) -> None:
    """Not UTF-8, or a number JSON allows but Python will not read (over 4300 digits):
    a 400 that says which, not "There was an error parsing the body"."""
    create = "/api/v1/transactions"
    sent = {"Content-Type": "application/json", **bearer(WRITER)}
    digits = "9" * 5000
    huge = f'{{"transaction_type": "WALLET_CASHOUT", "user_id": {digits}, "amount": "1"}}'
    deep = '{"transaction_type": "WALLET_CASHOUT", "metadata": {"k": ' + "[" * 5000
    deep += "]" * 5000 + "}}"
    with client_with(sqlite_db, writer_token=WRITER) as client:
        not_utf8 = client.post(create, content=b'{"currency": "\xff"}', headers=sent)
        too_long = client.post(create, content=huge.encode(), headers=sent)
        too_deep = client.post(create, content=deep.encode(), headers=sent)
    assert (not_utf8.status_code, not_utf8.json()["error"]) == (400, "InputError")
    assert not_utf8.json()["detail"] == "the request body is not UTF-8 (at byte 14)"
    assert (too_long.status_code, too_long.json()["error"]) == (400, "InputError")
    assert too_long.json()["detail"] == (
        "the request body is not JSON Python reads: an integer has more than 4300 digits"
    ), too_long.text
    # Deeper than Python's parser goes (about 950 levels): it said "There was an error
    # parsing the body" (found by a probe); 900 levels get the metadata's own 422.
    assert (too_deep.status_code, too_deep.json()["error"]) == (400, "InputError")
    assert too_deep.json()["detail"] == (
        "the request body is not JSON Python reads: it is nested too deeply"
    ), too_deep.text


def test_a_healthy_database_logs_no_error_for_the_status(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """`database_down`'s message was taken for the database's error whatever its state:
    every GET /api/v1/status (open to anyone, polled by the dashboard every 5 s) logged
    "database unreachable [error id ...]: database reachable" at ERROR, and the body's
    resolved alert said "database unreachable (error id ...)" (found by a probe)."""
    Monitor(db.engine, db.settings).evaluate()  # every rule's state stored
    caplog.set_level(logging.ERROR, logger="unistatus")
    with client_with(db, admin_token=ADMIN) as client:
        bodies = [client.get("/api/v1/status").json() for _ in range(2)]
    for body in bodies:
        assert body["database"]["up"] is True
        down = next(a for a in body["alerts"]["all"] if a["name"] == "database_down")
        assert down["state"] != "firing" and down["message"] == "database reachable", down
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_key_refused_is_said_as_the_client_sent_it(sqlite_db: Database) -> None:
    """The clash named the key as stored ('writer:k1', scoped by the token's name) and a
    non-ASCII key was told "1 to 255 characters" where HTTP takes 200 (found by a
    probe)."""
    body = {"transaction_type": "WALLET_CASHOUT", "user_id": 1, "amount": "1", "currency": "USD"}
    create = "/api/v1/transactions"
    with client_with(sqlite_db, writer_token=WRITER) as client:
        keyed = {"Idempotency-Key": "k1", **bearer(WRITER)}
        assert client.post(create, json=body, headers=keyed).status_code == 201
        clash = client.post(create, json={**body, "amount": "2"}, headers=keyed)
        odd_key = {"Idempotency-Key": "kä".encode(), **bearer(WRITER)}
        odd = client.post(create, json=body, headers=odd_key)
    assert clash.status_code == 422, clash.text
    assert "idempotency key 'k1' was used" in clash.json()["detail"], clash.text
    assert odd.status_code == 422, odd.text
    assert "1 to 200 characters" in odd.json()["detail"], odd.text


def test_a_create_with_two_idempotency_keys_is_refused(sqlite_db: Database) -> None:
    """Two Idempotency-Key headers (or two joined by a proxy, 'a, b') were taken as the
    first alone: a retry carrying the other one wrote a second payout (found by a probe).
    Refused (422, nothing written); one key, the same in each, is fine."""
    body = {"transaction_type": "WALLET_CASHOUT", "user_id": 1, "amount": "1", "currency": "USD"}
    create = "/api/v1/transactions"
    with client_with(sqlite_db, writer_token=WRITER) as client:
        auth = bearer(WRITER)
        two = client.post(
            create,
            json=body,
            headers=[
                ("Authorization", auth["Authorization"]),
                ("Idempotency-Key", "pA-1"),
                ("Idempotency-Key", "pB-1"),
            ],
        )
        joined = client.post(create, json=body, headers={"Idempotency-Key": "pA-1, pB-1", **auth})
        left = client.get("/api/v1/transactions/cashout:1")
        one = client.post(create, json=body, headers={"Idempotency-Key": "pA-1", **auth})
    for refused in (two, joined):
        assert refused.status_code == 422, refused.text
        assert "one Idempotency-Key" in refused.json()["detail"], refused.text
    assert left.status_code == 404, left.text  # nothing written
    assert one.status_code == 201, one.text


def test_the_same_idempotency_key_sent_twice_is_that_key(sqlite_db: Database) -> None:
    """A proxy that repeats the header sends 'k1' twice (or 'k1, k1'): one key, the
    same transaction (refused, 422, by the first fix: a review)."""
    body = {"transaction_type": "WALLET_CASHOUT", "user_id": 1, "amount": "1", "currency": "USD"}
    create = "/api/v1/transactions"
    auth = ("Authorization", bearer(WRITER)["Authorization"])
    with client_with(sqlite_db, writer_token=WRITER) as client:
        first = client.post(create, json=body, headers=[auth, ("Idempotency-Key", "k1")])
        twice = client.post(
            create, json=body, headers=[auth, ("Idempotency-Key", "k1"), ("Idempotency-Key", "k1")]
        )
        joined = client.post(create, json=body, headers=[auth, ("Idempotency-Key", "k1, k1")])
    assert first.status_code == 201, first.text
    for again in (twice, joined):
        assert again.status_code == 200, again.text  # the first result, replayed
        assert again.json()["entity_id"] == first.json()["entity_id"], again.text


@pytest.mark.parametrize("coding", ["gzip", "br", "GZIP, identity", ["identity", "gzip"]])
def test_a_compressed_body_is_refused_415(sqlite_db: Database, coding: str | list[str]) -> None:
    """A Content-Encoding is not decoded: a plain body labelled 'br' was written as it
    came, a gzip body answered "not UTF-8" (a probe). 415, nothing written."""
    body = {"transaction_type": "WALLET_CASHOUT", "user_id": 1, "amount": "1", "currency": "USD"}
    raw = json.dumps(body).encode()
    codings = coding if isinstance(coding, list) else [coding]
    sent = gzip.compress(raw) if codings[0].startswith("gzip") else raw
    headers = [("Content-Type", "application/json"), *bearer(WRITER).items()]
    headers += [("Content-Encoding", c) for c in codings]  # two headers: a review
    with client_with(sqlite_db, writer_token=WRITER) as client:
        refused = client.post("/api/v1/transactions", content=sent, headers=headers)
        plain = {"Content-Encoding": "identity, identity", "Content-Type": "application/json"}
        taken = client.post(
            "/api/v1/transactions", content=raw, headers={**plain, **bearer(WRITER)}
        )
    assert refused.status_code == 415, refused.text
    assert refused.json()["error"] == "InputError", refused.text
    assert "send the body uncompressed" in refused.json()["detail"], refused.text
    assert taken.status_code == 201, taken.text
    assert taken.json()["entity_id"] == "UTX100000000000001", taken.text  # the first row
