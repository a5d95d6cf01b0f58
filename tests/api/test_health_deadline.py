"""``/health`` answers within a bound even when the database does not answer at all.

Its reads' server-side timeouts (``health_timeout_ms``: tests/api/test_service.py)
cannot fire while the request never reaches the server: through a black-holed link a
probe waited as long as the link stayed silent, holding a worker thread and a pooled
connection each. Its database work runs under a client-side deadline instead, and a
probe that finds an earlier one still waiting answers from that without a new wait.
"""

from __future__ import annotations

import threading
import time

import httpx

from conftest import Database
from support.blackhole import proxy_for
from support.serving import serving
from unistatus.api.service import create_app
from unistatus.config import load_settings


def test_health_is_down_within_its_deadline_while_the_database_is_silent(pg: Database) -> None:
    with proxy_for(pg.url) as proxy:
        settings = load_settings(
            database_url=proxy.url(pg.url), schema=pg.settings.schema, health_timeout_ms=200
        )
        app = create_app(settings)
        with serving(app) as base:
            assert httpx.get(f"{base}/health", timeout=5).json()["status"] == "healthy"
            proxy.black_hole()
            started = time.monotonic()
            r = httpx.get(f"{base}/health", timeout=5)
            assert time.monotonic() - started < 4
            assert r.status_code == 503
            body = r.json()
            assert body["status"] == "down"
            assert "did not answer within" in body["checks"]["database"]["error"]
            threads = threading.active_count()
            started = time.monotonic()
            again = httpx.get(f"{base}/health", timeout=5)  # the first probe still waits
            assert time.monotonic() - started < 1
            assert again.json()["status"] == "down"
            assert threading.active_count() <= threads  # no new waiting thread
            stopping = time.monotonic()
        # The server stops (as on SIGTERM) with the probe still stuck: no request waits.
        assert time.monotonic() - stopping < 3
