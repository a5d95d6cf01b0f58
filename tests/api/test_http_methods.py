"""HTTP behaviour a load balancer or a client library relies on (exploratory review):
HEAD wherever GET is served (RFC 9110 section 9.1: a health check by HEAD got 405), and
a create the service refuses for good is no 503 a client would retry."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from conftest import Database
from unistatus.api.service import create_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("path", ["/health", "/metrics", "/api/v1/status", "/"])
def test_head_is_served_wherever_get_is(sqlite_db: Database, path: str) -> None:
    settings = sqlite_db.settings.model_copy(update={"admin_token": TOKEN})
    with TestClient(create_app(settings, sqlite_db.engine)) as client:
        got = client.get(path)
        head = client.head(path)
        assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
        assert head.content == b""


@pytest.mark.parametrize("path", ["/health", "/metrics", "/api/v1/status"])
def test_a_method_not_served_is_told_head_is(sqlite_db: Database, path: str) -> None:
    """405's Allow said "GET" of a route HEAD is served on too (found by a probe)."""
    with TestClient(create_app(sqlite_db.settings, sqlite_db.engine)) as client:
        r = client.delete(path)
    assert r.status_code == 405, r.text
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD"}, r.headers["allow"]


@pytest.mark.parametrize("path", ["/api/v1/transactions/cashout:1/", "/health/", "/metrics/"])
def test_a_trailing_slash_is_not_redirected_to_the_host_the_client_named(
    sqlite_db: Database, path: str
) -> None:
    """The router redirected '/x/' to '/x' at the Host header's host (307 to
    http://evil.example/..., an open redirect; no operation declared a 307): a 404 now."""
    with TestClient(create_app(sqlite_db.settings, sqlite_db.engine)) as client:
        r = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404, (r.status_code, r.headers)
    assert "location" not in r.headers
    assert r.json()["error"] == "NotFoundError", r.text


@pytest.mark.postgres
def test_a_create_no_legacy_id_can_be_migrated_for_is_a_409_not_a_503(pg: Database) -> None:
    """The legacy table's next id is beyond what a UTX id holds: every create of the
    system is refused until an operator acts (nothing written). A 503 said "the database
    failed or is unreachable", which a client retries for ever."""
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("SELECT setval('cashouts_id_seq', 99999999999999)")
    settings = pg.settings.model_copy(update={"admin_token": TOKEN})
    body = {"transaction_type": "WALLET_CASHOUT", "user_id": 1, "amount": "1", "currency": "USD"}
    try:
        with TestClient(create_app(settings, pg.engine)) as client:
            r = client.post("/api/v1/transactions", json=body, headers=AUTH)
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "ConfigError" and "99999999999999" in r.json()["detail"]
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("SELECT setval('cashouts_id_seq', 1, false)")


@pytest.mark.postgres
def test_health_after_the_server_dropped_the_services_connections_is_healthy(
    pg: Database,
) -> None:
    """A PostgreSQL restart or failover drops every pooled connection: the next /health
    met a dead one and said "down" (503) while the database answered, which makes a
    probe with failureThreshold=1 restart a healthy service (exploratory review)."""
    import sqlalchemy as sa  # noqa: PLC0415

    settings = pg.settings.model_copy(update={"admin_token": TOKEN})
    with TestClient(create_app(settings, pg.engine)) as client:
        assert client.get("/health").status_code == 200
        with sa.create_engine(pg.url).connect() as admin:
            admin.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        after = client.get("/health")
        assert after.status_code == 200, after.text
        assert after.json()["status"] != "down"


def _hold_lock(url: str, table: str, seconds: float, held: threading.Event) -> None:
    """Another session holding ``table`` exclusively for ``seconds`` (a migration's DDL,
    an operator's LOCK TABLE), then letting go."""
    import sqlalchemy as sa  # noqa: PLC0415

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            held.set()
            conn.exec_driver_sql(f"SELECT pg_sleep({seconds})")
    finally:
        held.set()
        engine.dispose()


@pytest.mark.postgres
def test_health_answers_within_a_probe_timeout_while_a_table_is_locked(pg: Database) -> None:
    """A lock held on unistatus_control (24 s in the SRE's repro) held /health for as
    long, then it said "healthy": a Kubernetes probe (1 s timeout) failed meanwhile and
    nothing said why. /health answers within its bound, degraded, naming the lock wait."""
    held = threading.Event()
    holder = threading.Thread(
        target=_hold_lock, args=(pg.url, pg.table("unistatus_control"), 6, held)
    )
    with TestClient(create_app(pg.settings, pg.engine)) as client:
        assert client.get("/health").json()["status"] == "healthy"
        holder.start()
        try:
            assert held.wait(10)
            started = time.monotonic()
            r = client.get("/health")
            took = time.monotonic() - started
        finally:
            holder.join()
    assert took < 2, f"/health took {took:.1f} s behind the lock"
    body = r.json()
    assert body["status"] == "degraded", body
    assert any("lock" in why for why in body["checks"]["degraded_because"]), body


@pytest.mark.postgres
def test_the_services_own_engine_bounds_each_lock_wait(pg: Database) -> None:
    """The engine the service builds from its URL waits for a lock at most
    lock_timeout_ms, like the adapter's and the backfill's: its reads once waited for
    as long as any lock was held (65 s and more in the SRE's repro)."""
    settings = pg.settings.model_copy(update={"database_url": pg.url, "lock_timeout_ms": 1234})
    app = create_app(settings)
    with TestClient(app):
        with app.state.service.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar_one() == "1234ms"


@pytest.mark.postgres
@pytest.mark.parametrize("path", ["/metrics", "/api/v1/status"])
def test_metrics_and_status_answer_within_a_scrape_timeout_while_a_table_is_locked(
    pg: Database, path: str
) -> None:
    """Behind a lock on unistatus_control each of their reads waited lock_timeout_ms
    (5 s by default) in turn: 25 s in the SRE's measurement, past Prometheus's 10 s
    scrape timeout, so the scrape failed and every series went stale. Their lock waits
    are bounded as /health's are (their statements are not: a large statistics table
    is read slowly but rightly); what could not be read says so."""
    held = threading.Event()
    holder = threading.Thread(
        target=_hold_lock, args=(pg.url, pg.table("unistatus_control"), 8, held)
    )
    with TestClient(create_app(pg.settings, pg.engine)) as client:
        assert client.get(path).status_code == 200
        holder.start()
        try:
            assert held.wait(10)
            started = time.monotonic()
            r = client.get(path)
            took = time.monotonic() - started
        finally:
            holder.join()
    assert r.status_code == 200, r.text
    assert took < 4, f"{path} took {took:.1f} s behind the lock"
    if path == "/metrics":
        assert 'unistatus_source_up{source="mode"} 0.0' in r.text, r.text
