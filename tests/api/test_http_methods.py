"""HTTP behaviour a load balancer or a client library relies on (exploratory review):
HEAD wherever GET is served (RFC 9110 section 9.1: a health check by HEAD got 405), and
a create the service refuses for good is no 503 a client would retry."""

from __future__ import annotations

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
