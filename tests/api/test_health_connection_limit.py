"""/health while the role's CONNECTION LIMIT is full says so, not "database unreachable"
(exploratory DBA: /health flapped to "down ... database unreachable" as a role with
``CONNECTION LIMIT 2`` under 20 writers)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from conftest import Database
from support.limited_role import a_role_limited_to, hold
from unistatus.api.service import create_app
from unistatus.config import load_settings
from unistatus.db.engine import create_engine


def test_health_names_the_connection_limit(pg: Database) -> None:
    with a_role_limited_to(pg, 1) as (_role, url):
        settings = load_settings(database_url=url, schema=pg.settings.schema)
        engine = create_engine(url, schema=settings.schema)
        held = hold(url, 1)
        try:
            client = TestClient(create_app(settings, engine))  # no lifespan: no monitor
            body = client.get("/health").json()
            error = body["checks"]["database"]["error"]
            assert "unreachable" not in error, error
            assert "the server refused a connection: too many connections" in error, error
        finally:
            for conn in held:
                conn.close()
            engine.dispose()


WRITER = "w" * 40


def test_a_write_refused_its_connection_answers_503_naming_the_limit(pg: Database) -> None:
    with a_role_limited_to(pg, 1) as (_role, url):
        settings = load_settings(
            database_url=url,
            schema=pg.settings.schema,
            writer_token=WRITER,
            write_queue_timeout_seconds=0.5,
            record_stats=False,
        )
        app = create_app(settings)
        held = hold(url, 1)
        try:
            client = TestClient(app)  # no lifespan: no monitor
            r = client.post(
                "/api/v1/transactions",
                json={"transaction_type": "WALLET_CASHOUT", "user_id": 1, "amount": "1.00"}
                | {"currency": "USD"},
                headers={"Authorization": f"Bearer {WRITER}"},
            )
            assert r.status_code == 503, r.text
            assert "the server refused a connection: too many connections" in r.text, r.text
            assert "unreachable" not in r.json()["detail"], r.text
        finally:
            for conn in held:
                conn.close()


def test_a_stored_database_down_alert_reaches_an_anonymous_client_without_the_role(
    pg: Database,
) -> None:
    """The last evaluation's ``database_down`` message names the role (the log keeps
    it); ``/api/v1/status`` shows it to anyone only as the public form, with an error id
    (a review finding: the alert's stored message was served as it was)."""
    import datetime as dt

    import sqlalchemy as sa

    from unistatus.db.tables_alerts import alert_state

    now = dt.datetime.now(dt.UTC)
    secret = 'too many connections for role "payments_rw_secret"'
    with pg.engine.begin() as conn:
        conn.execute(
            sa.insert(alert_state).values(
                name="database_down",
                level="critical",
                state="firing",
                since=now,
                message=f"the server refused a connection: {secret} (...); pool up to 60",
                evaluated_at=now,
            )
        )
    client = TestClient(create_app(pg.settings, pg.engine))
    body = client.get("/api/v1/status").json()
    said = [a for a in body["alerts"]["all"] if a["name"] == "database_down"]
    assert said, body["alerts"]
    assert "payments_rw_secret" not in str(body), said
    assert "error id" in said[0]["message"], said


def test_a_503_of_a_write_that_may_have_committed_does_not_say_refused() -> None:
    """ "The server refused a connection" reads as "nothing written": not for a write whose
    COMMIT was lost before its retry was refused (a review finding)."""
    import json

    from unistatus.api.error_responses import unavailable

    detail = (
        "outcome unknown, it may have committed (connection lost during COMMIT); then: the "
        'server refused a connection: too many connections for role "x"'
    )
    response = unavailable("StorageError", detail, {"outcome_unknown": True, "error": detail})
    body = json.loads(bytes(response.body))
    assert "refused" not in body["detail"], body
    assert body["result"]["outcome_unknown"] is True
    # No pacing of a blind retry, which could be a second payout (a review); a write
    # known not to have committed is told when to retry.
    assert "retry-after" not in response.headers, response.headers
    known = unavailable("StorageError", "refused", {"outcome_unknown": False})
    assert known.headers["retry-after"] == "2"
