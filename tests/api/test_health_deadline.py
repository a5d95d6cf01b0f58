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
import pytest

from conftest import Database
from support.blackhole import proxy_for
from support.serving import serving
from unistatus.api.probe_deadline import (
    MAX_ABANDONED,
    RETRY_AFTER_DEADLINES,
    ProbeDeadline,
    probe_deadline_ms,
)
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


def test_a_probe_deadline_joins_a_run_in_time_and_answers_a_stuck_one_at_once() -> None:
    release = threading.Event()
    runs: list[int] = []

    def work() -> str:
        runs.append(1)
        release.wait(10)
        return "answered"

    deadline: ProbeDeadline[str] = ProbeDeadline(300, "test-probe")
    assert deadline.run(work) is None  # past its deadline
    started = time.monotonic()
    assert deadline.run(work) is None  # still stuck: answered at once, no new run
    assert time.monotonic() - started < 0.1
    assert len(runs) == 1
    release.set()
    time.sleep(0.05)
    assert deadline.run(lambda: "again") == "again"  # the stuck one ended: a new run


def test_a_run_stuck_for_good_is_left_behind_and_a_new_one_tried() -> None:
    """A reviewer: behind a hung proxy that keeps acknowledging, no network bound ends
    the stuck run, and every later probe answered "down" until a restart, though new
    connections worked again. After a few deadlines a new run is tried (and at most
    MAX_ABANDONED stuck runs are left waiting)."""
    release = threading.Event()
    stuck = [threading.Event() for _ in range(MAX_ABANDONED + 2)]
    deadline: ProbeDeadline[str] = ProbeDeadline(100, "test-probe")
    try:
        assert deadline.run(lambda: "stuck" if release.wait(30) else "never") is None
        assert deadline.run(lambda: "fresh") is None  # still within a few deadlines
        time.sleep(0.1 * (RETRY_AFTER_DEADLINES + 0.5))
        assert deadline.run(lambda: "fresh") == "fresh"  # a new run, the stuck one left
        for event in stuck:  # more stuck runs than may be left behind
            deadline.run(lambda e=event: "x" if e.wait(30) else "never")
            time.sleep(0.1 * (RETRY_AFTER_DEADLINES + 0.5))
        alive = [t for t in threading.enumerate() if t.name == "test-probe"]
        assert len(alive) <= MAX_ABANDONED + 1, alive
    finally:
        for event in (release, *stuck):
            event.set()


def test_a_probe_deadline_hands_on_what_the_work_raised() -> None:
    deadline: ProbeDeadline[str] = ProbeDeadline(1000, "test-probe")

    def broken() -> str:
        raise ValueError("no table")

    with pytest.raises(ValueError, match="no table"):
        deadline.run(broken)


def test_the_deadline_is_a_few_health_timeouts() -> None:
    assert probe_deadline_ms(300) == 2400
    assert probe_deadline_ms(50) == 1000
    assert probe_deadline_ms(0) == 10_000
