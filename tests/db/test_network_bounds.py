"""Client-side network bounds on unistatus's own PostgreSQL engines (db/engine.py).

The server-side timeouts (``statement_timeout``, ``lock_timeout``) cannot fire when a
request never reaches the server: a black-holed link left a write, a mode switch or a
probe waiting for ever. unistatus's engines ask libpq for ``connect_timeout``, TCP
keepalives and ``tcp_user_timeout``, and name their sessions; what the URL says stands,
and an application's own engine is left as it is.

The keepalives and ``tcp_user_timeout`` cannot be seen firing against a userland proxy
(its kernel ACKs and answers the probes: tests/support/blackhole.py): they are checked
as the parameters libpq holds; ``connect_timeout`` is seen firing through the proxy.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.blackhole import proxy_for
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.config import load_settings
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine, session_name


def _parameters(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        params: dict[str, str] = dbapi.info.get_parameters()  # type: ignore[union-attr]
        params["application_name"] = conn.exec_driver_sql("SHOW application_name").scalar_one()
        return params


def test_own_engines_bound_the_network_by_default(pg: Database) -> None:
    engine = create_engine(pg.url, schema=pg.settings.schema)
    try:
        params = _parameters(engine)
    finally:
        engine.dispose()
    assert params["connect_timeout"] == "10"
    assert params["keepalives"] == "1"
    assert params["keepalives_idle"] == "30"
    assert params["keepalives_interval"] == "10"
    assert params["keepalives_count"] == "3"
    assert params["tcp_user_timeout"] == "30000"
    assert params["application_name"] == "unistatus"


def test_a_pgappname_is_kept_over_the_default_name(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer: the default "unistatus" overrode the user's PGAPPNAME (libpq's own
    environment variable, which a connection parameter beats)."""
    monkeypatch.setenv("PGAPPNAME", "payments-cron")
    engine = create_engine(pg.url, schema=pg.settings.schema)
    try:
        assert _parameters(engine)["application_name"] == "payments-cron"
    finally:
        engine.dispose()


def test_the_settings_set_the_bounds_and_the_url_wins(pg: Database) -> None:
    settings = load_settings(
        database_url=pg.url,
        network={"connect_timeout_seconds": 4, "tcp_user_timeout_ms": 7000},
    )
    url = sa.engine.make_url(pg.url).update_query_dict(
        {"connect_timeout": "3", "application_name": "billing"}
    )
    engine = create_engine(
        url.render_as_string(hide_password=False),
        schema=pg.settings.schema,
        network=settings.network,
        application_name="unistatus check",
    )
    try:
        params = _parameters(engine)
    finally:
        engine.dispose()
    assert params["connect_timeout"] == "3"  # the URL's
    assert params["tcp_user_timeout"] == "7000"  # the settings'
    assert params["application_name"] == "billing"


def test_an_applications_engine_is_left_as_it_is(pg: Database) -> None:
    own = sa.create_engine(pg.url)
    try:
        engine = create_engine(own, schema=pg.settings.schema)
        params = _parameters(engine)
    finally:
        own.dispose()
    assert "connect_timeout" not in params
    assert "tcp_user_timeout" not in params


def test_adapter_sessions_are_named(pg: Database) -> None:
    adapter = DualWriteAdapter(pg.url, settings=pg.settings, record_stats=False)
    try:
        params = _parameters(adapter.engine)
    finally:
        adapter.engine.dispose()
    assert params["application_name"] == "unistatus adapter"
    assert params["tcp_user_timeout"] == "30000"


def _within(seconds: float, work: Any) -> tuple[float, Any]:
    """(seconds taken, what ``work`` returned or raised); fails if it took longer."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still waiting after {seconds} s"
    return time.monotonic() - started, outcome[0]


def test_a_write_through_a_black_holed_link_fails_within_connect_timeout(pg: Database) -> None:
    set_mode(
        pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test", force=True
    )
    with proxy_for(pg.url) as proxy:
        settings = load_settings(
            database_url=proxy.url(pg.url),
            schema=pg.settings.schema,
            network={"connect_timeout_seconds": 2},
            write_queue_timeout_seconds=1,
        )
        adapter = DualWriteAdapter(settings.database_url, settings=settings, record_stats=False)
        try:
            adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
            adapter.engine.dispose()  # the next write needs a new connection
            proxy.black_hole()
            took, result = _within(
                8, lambda: adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
            )
        finally:
            proxy.close()
            adapter.close()
            adapter.engine.dispose()
    assert not result.overall_success
    assert "connection timeout expired" in result.error
    assert took < 8


def test_cli_sessions_keep_their_command_name(pg: Database) -> None:
    name = session_name("check")
    engine = create_engine(pg.url, schema=pg.settings.schema, application_name=name)
    try:
        assert _parameters(engine)["application_name"] == "unistatus/check"
    finally:
        engine.dispose()
