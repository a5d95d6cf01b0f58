"""The HTTP service on SQLite and PostgreSQL: health, metrics, status, transactions, control."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import IN_EVERY_LAYOUT
from support.serving import serving
from support.stats_data import record_latency, seed_pairs
from unistatus.api.service import create_app
from unistatus.config import AutoResponses, load_settings
from unistatus.db.control import get_mode, history
from unistatus.db.engine import create_engine
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.migration.check import run_check
from unistatus.observe import alerts
from unistatus.observe.notify import Notifier

TOKEN = "s3cret-token"


def client_for(db: Any, **overrides: Any) -> TestClient:
    settings = db.settings.model_copy(update=overrides)
    return TestClient(create_app(settings, db.engine))


@pytest.fixture
def client(db: Any) -> Iterator[TestClient]:
    with client_for(db, admin_token=TOKEN) as c:
        yield c


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- health -------------------------------------------------------------------------


def test_health_is_healthy_on_a_healthy_setup(db: Any, client: TestClient) -> None:
    alerts.evaluate(db.engine, db.settings, notifier=Notifier())
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["checks"]["database"]["status"] == "up"
    assert body["checks"]["mode"] == "LEGACY_ONLY"
    assert body["checks"]["phase"] == 0
    assert body["checks"]["critical_alerts"] == []


def test_health_is_degraded_while_a_critical_alert_fires(db: Any, client: TestClient) -> None:
    seed_pairs(db.engine, 100, drift=5)
    run_check(db.engine, db.settings)
    settings = db.settings.model_copy(
        update={"auto_responses": AutoResponses(rollback_on_critical_consistency=False)}
    )
    alerts.evaluate(db.engine, settings, notifier=Notifier())
    body = client.get("/health").json()
    assert body["status"] == "degraded"
    assert "consistency_critical" in body["checks"]["critical_alerts"]


def test_health_is_degraded_while_alert_evaluation_keeps_failing(
    db: Any, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A monitor whose every evaluation fails (a session setting the driver cannot read,
    a table it cannot read) leaves the alerts unevaluated: not healthy."""

    def fail(_monitor: Any) -> None:
        raise RuntimeError("can't parse timestamptz with DateStyle 'German, DMY'")

    monkeypatch.setattr(alerts.Monitor, "evaluate", fail)
    service = client.app.state.service  # type: ignore[attr-defined]
    service.start_monitor(0.05)
    deadline = time.monotonic() + 2  # some 40 evaluations, each failed
    while (body := client.get("/health").json())["status"] == "healthy":
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert body["status"] == "degraded"
    assert any("alert evaluation" in why for why in body["checks"]["degraded_because"])


def test_health_is_degraded_while_evaluations_are_left_unstored(
    db: Any, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An evaluation whose state cannot be stored for a lock is shown unstored and the
    monitor goes on (tests/observe/test_alerts_behind_locks.py, a real lock); meanwhile
    nothing is notified or acted on, so /health does not say healthy (found by review:
    the loop cleared its failure after each such evaluation)."""
    import psycopg
    import sqlalchemy as sa

    def locked(*_args: Any) -> None:
        orig = psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
        raise sa.exc.OperationalError("UPDATE unistatus_alert_state", {}, orig)

    monkeypatch.setattr(alerts.Monitor, "_store", locked)
    service = client.app.state.service  # type: ignore[attr-defined]
    service.start_monitor(0.05)
    deadline = time.monotonic() + 5
    while (body := client.get("/health").json())["status"] == "healthy":
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert body["status"] == "degraded", body
    assert any("alert evaluation" in why for why in body["checks"]["degraded_because"]), body
    assert "alert state not stored" in str(service.evaluation_failure)  # the log says it


def test_health_is_down_with_503_when_the_database_is_unreachable(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    app = create_app(load_settings(database_url=url), create_engine(url))
    r = TestClient(app).get("/health")
    assert r.status_code == 503
    assert r.json()["status"] == "down"
    assert r.json()["checks"]["database"]["status"] == "down"


# --- metrics and status -------------------------------------------------------------


@IN_EVERY_LAYOUT
def test_metrics_reflect_the_database(db: Any, client: TestClient) -> None:
    seed_pairs(db.engine, 100, drift=1)
    run_check(db.engine, db.settings)
    record_latency(
        db.engine,
        DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY,
        120.0,
        40,
        errors=1,
        system=LegacySystemType.CASHOUT,
    )
    alerts.evaluate(
        db.engine,
        db.settings.model_copy(
            update={"auto_responses": AutoResponses(repair_on_consistency_warning=False)}
        ),
        notifier=Notifier(),
    )
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "unistatus_database_up 1.0" in text
    # Per legacy system (the seeded pairs are cashouts).
    assert 'unistatus_consistency_rate{system="CASHOUT"} 0.99' in text
    assert 'unistatus_mode{mode="LEGACY_ONLY",system="ESCROW"} 1.0' in text
    assert 'unistatus_phase{system="EXCHANGE"} 0.0' in text
    assert (
        'unistatus_operation_latency_seconds_bucket{le="0.15",mode="DUAL_WRITE_LEGACY_PRIMARY",'
        'operation="update_status",system="CASHOUT"} 40.0' in text
    )
    assert (
        'unistatus_operation_latency_seconds_bucket{le="0.1",mode="DUAL_WRITE_LEGACY_PRIMARY",'
        'operation="update_status",system="CASHOUT"} 0.0' in text
    )
    assert (
        'unistatus_operations_total{mode="DUAL_WRITE_LEGACY_PRIMARY",operation="update_status",'
        'system="CASHOUT"} 40.0' in text
    )
    assert (
        'unistatus_operation_errors_total{mode="DUAL_WRITE_LEGACY_PRIMARY",operation="update_status",'
        'system="CASHOUT"} 1.0' in text
    )
    assert "unistatus_shadow_mismatches_total 0.0" in text
    assert 'unistatus_backfill_progress_ratio{system="CASHOUT"}' in text
    assert "unistatus_repair_queue_open 0.0" in text
    assert "unistatus_quarantine_rows 0.0" in text
    assert 'unistatus_alert_firing{alert="consistency_warning",level="warning"} 1.0' in text
    assert (
        'unistatus_operation_latency_seconds_sum{mode="DUAL_WRITE_LEGACY_PRIMARY",'
        'operation="update_status",system="CASHOUT"} 4.8' in text  # 40 x 120 ms, in seconds
    )
    # p95 in the 115..130 ms bucket, bounded by the largest latency seen (120 ms)
    assert 'unistatus_latency_p95_seconds{system="CASHOUT"} 0.11975\n' in text
    # The other systems ran nothing: no p95 (unknown, never 0), an error rate of 0.
    assert 'unistatus_latency_p95_seconds{system="ESCROW"}' not in text
    assert 'unistatus_error_rate{system="ESCROW"} 0.0' in text
    assert 'unistatus_error_rate{system="CASHOUT"} 0.025' in text


def test_status_has_what_the_dashboard_shows(db: Any, client: TestClient) -> None:
    seed_pairs(db.engine, 10)
    run_check(db.engine, db.settings)
    body = client.get("/api/v1/status").json()
    assert body["mode"] == "LEGACY_ONLY"
    assert body["phase"] == 0
    assert isinstance(body["gates"], list) and body["gates"]
    assert body["data_quality"]["consistency_rate"] == 1.0
    assert body["data_quality"]["mapping"]["coverage"] == 1.0
    assert body["data_quality"]["last_check"]["total"] == 10
    assert set(body["progress"]["systems"]) == {"CASHOUT", "ESCROW", "EXCHANGE"}
    assert [p["phase"] for p in body["progress"]["phases"]] == [1, 2, 3, 4]
    assert body["performance"]["count"] == 0
    assert body["alerts"]["firing"] == []
    assert body["sources"] and all(v == "ok" for v in body["sources"].values()), body["sources"]


# --- transactions -------------------------------------------------------------------


@IN_EVERY_LAYOUT
def test_transactions_create_read_update(db: Any, client: TestClient) -> None:
    r = client.post(
        "/api/v1/transactions",
        json={
            "transaction_type": "WALLET_CASHOUT",
            "user_id": 7,
            "amount": "12.50",
            "currency": "USD",
        },
        headers=auth(),
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["overall_success"] and created["legacy_entity_id"]
    ref = f"cashout:{created['legacy_entity_id']}"
    r = client.get(f"/api/v1/transactions/{ref}")
    assert r.status_code == 200
    assert r.json()["status"] == "PENDING" and r.json()["source"] == "legacy"
    r = client.post(
        f"/api/v1/transactions/{ref}/status",
        json={"status": "PROCESSING", "reason": "sent", "triggered_by": "api-test"},
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "PROCESSING"
    assert client.get(f"/api/v1/transactions/{ref}").json()["status"] == "PROCESSING"


def test_transaction_errors_are_clear_4xx_and_write_nothing(db: Any, client: TestClient) -> None:
    r = client.post(
        "/api/v1/transactions",
        json={"transaction_type": "ESCROW", "user_id": 7, "amount": "5", "currency": "USD"},
        headers=auth(),
    )
    ref = f"escrow:{r.json()['legacy_entity_id']}"
    before = db.count("escrows"), db.count("unified_status_history")

    r = client.post(
        f"/api/v1/transactions/{ref}/status",
        json={"status": "SUCCESS", "reason": "skip ahead", "triggered_by": "t"},
        headers=auth(),
    )
    assert r.status_code == 409
    assert "cannot go from PENDING to SUCCESS" in r.json()["detail"]
    r = client.post(
        f"/api/v1/transactions/{ref}/status",
        json={"status": "OTP_PENDING", "reason": "otp", "triggered_by": "t"},
        headers=auth(),
    )
    assert r.status_code == 422 and "not valid for ESCROW" in r.json()["detail"]
    r = client.get("/api/v1/transactions/escrow:999999")
    assert r.status_code == 404 and "no transaction" in r.json()["detail"]
    r = client.get("/api/v1/transactions/bogus-id")
    assert r.status_code == 422 and "malformed id" in r.json()["detail"]
    r = client.post(
        "/api/v1/transactions",
        json={"transaction_type": "ESCROW", "user_id": 7, "amount": 5.5, "currency": "USD"},
        headers=auth(),
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "amount"]
    # One key to tell every refused input by, whoever refused it (the schema or unistatus).
    assert r.json()["error"] == "InputError"
    r = client.post(
        "/api/v1/transactions",
        json={"transaction_type": "ESCROW", "user_id": 7, "amount": "5", "currency": "usd"},
        headers=auth(),
    )
    assert r.status_code == 422
    r = client.post(
        f"/api/v1/transactions/{ref}/status",
        json={"status": "CANCELLED", "reason": "x\u0000y", "triggered_by": "t"},
        headers=auth(),
    )
    assert r.status_code == 422
    assert (db.count("escrows"), db.count("unified_status_history")) == before


# --- control ------------------------------------------------------------------------


CONTROL = [
    ("put", "/api/v1/control/mode", {"mode": "DUAL_WRITE_LEGACY_PRIMARY", "reason": "go"}),
    ("post", "/api/v1/control/phase/advance", {"reason": "go"}),
    ("post", "/api/v1/control/phase/rollback", {"reason": "back"}),
    ("post", "/api/v1/control/rollback", {"reason": "emergency"}),
]


@pytest.mark.parametrize(("method", "path", "body"), CONTROL)
def test_control_is_disabled_without_a_configured_token(
    db: Any, method: str, path: str, body: dict[str, Any]
) -> None:
    with client_for(db, admin_token=None) as c:
        r = c.request(method, path, json=body, headers=auth("anything"))
    assert r.status_code == 403
    assert "disabled" in r.json()["detail"] and "UNISTATUS_ADMIN_TOKEN" in r.json()["detail"]
    assert get_mode(db.engine) is DualWriteMode.LEGACY_ONLY


@pytest.mark.parametrize(("method", "path", "body"), CONTROL)
def test_control_needs_the_right_token(
    db: Any, client: TestClient, method: str, path: str, body: dict[str, Any]
) -> None:
    for headers in ({}, auth("wrong"), {"Authorization": "Basic " + TOKEN}):
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
    assert get_mode(db.engine) is DualWriteMode.LEGACY_ONLY
    assert history(db.engine) == []


def test_control_with_the_token(db: Any, client: TestClient) -> None:
    r = client.put(
        "/api/v1/control/mode",
        json={"mode": "DUAL_WRITE_LEGACY_PRIMARY", "reason": "phase 1 by hand", "actor": "ops"},
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    assert get_mode(db.engine) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
    # Who: the token by its name, then the caller's own label.
    assert history(db.engine, "mode")[0].actor == "token:admin (ops)"
    for loose in ("yes", 1, "true"):  # only a JSON true forces a unified-read mode
        body = {"mode": "UNIFIED_ONLY", "reason": "x", "force": loose}
        r = client.put("/api/v1/control/mode", json=body, headers=auth())
        assert r.status_code == 422, (loose, r.text)
    assert get_mode(db.engine) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
    r = client.put("/api/v1/control/mode", json={"mode": "SIDEWAYS", "reason": "x"}, headers=auth())
    assert r.status_code == 422
    # Phase 0 -> 1 needs its gates; unforced it either passes or is refused with 409.
    r = client.post("/api/v1/control/phase/advance", json={}, headers=auth())
    assert r.status_code == 422, r.text  # a reason is required (recorded)
    r = client.post("/api/v1/control/phase/advance", json={"reason": "go"}, headers=auth())
    assert r.status_code in (200, 409), r.text
    r = client.post(
        "/api/v1/control/phase/advance",
        json={"force": True, "reason": "test"},
        headers=auth(),
    )
    assert r.status_code in (200, 409), r.text
    r = client.post("/api/v1/control/rollback", json={"reason": "drill"}, headers=auth())
    assert r.status_code == 200, r.text
    assert get_mode(db.engine) is DualWriteMode.LEGACY_ONLY


# --- the real server: `curl -s http://localhost:5000/health | jq .status` (docs/runbook.md) ---


def test_real_server_health_prints_healthy(db: Any) -> None:
    app = create_app(db.settings, db.engine, monitor_interval=0.2)
    with serving(app) as base:
        deadline = time.monotonic() + 5
        while True:  # the background monitor writes its first evaluation
            with db.engine.connect() as conn:
                evaluated = conn.execute(
                    sa.text("SELECT count(*) FROM unistatus_alert_state")
                ).scalar_one()
            if evaluated or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        r = httpx.get(f"{base}/health", timeout=5)
    assert evaluated
    assert r.status_code == 200
    assert r.json()["status"] == "healthy"


def test_a_refusal_of_the_control_endpoints_says_what_to_send(db: Any, client: TestClient) -> None:
    """A 409 told an HTTP client to "pass --force with --reason" (the command's words;
    found by a probe): it names the body's fields."""
    advance = "/api/v1/control/phase/advance"
    r = client.post(advance, json={"reason": "go", "from_phase": 0}, headers=auth())
    assert r.status_code == 200, r.text
    with db.engine.begin() as conn:  # a legacy row the backfill has not copied
        conn.exec_driver_sql(
            "INSERT INTO cashouts (status, user_id, amount, currency, created_at, updated_at) "
            "VALUES ('PENDING', 1, 1, 'USD', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
    stale = client.put(
        "/api/v1/control/mode", json={"mode": "UNIFIED_ONLY", "reason": "x"}, headers=auth()
    )
    gated = client.post(advance, json={"reason": "go", "from_phase": 1}, headers=auth())
    for r in (stale, gated):
        assert r.status_code == 409, r.text
        said = r.json()["detail"]
        assert '"force": true with a "reason"' in said and "--" not in said, said


def test_a_command_quoted_whole_in_a_refusal_is_kept() -> None:
    """The rewrite of the command's options for HTTP changed `retire legacy-columns
    --undo --reason ...` into a command that does not exist (found by a review)."""
    from unistatus.api.control_routes import _said_for_http
    from unistatus.errors import GateError

    quoted = "Restore them first with `unistatus retire legacy-columns --undo --reason ...`"
    with pytest.raises(GateError) as kept, _said_for_http():
        raise GateError(quoted)
    assert str(kept.value) == quoted
