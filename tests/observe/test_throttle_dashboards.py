"""Both dashboards show the backfill's throttle: running or waiting and why (p95, lag,
lock waits), paused, the batch size and its target, the rate limit. Workers' rows are
written through the workers' own code (Activity), as ``backfill status`` reads them."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from rich.console import Console

from unistatus.api.service import create_app
from unistatus.backfill.activity import PAUSED, Activity
from unistatus.backfill.health import LAG, P95, RATE, TRAFFIC, Decision, Readings
from unistatus.clock import utcnow
from unistatus.db.dialect import ops_for
from unistatus.observe.terminal_dashboard import frame


def terminal(db: Any) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(frame(db.engine, db.settings))
    return console.export_text()


def status(db: Any) -> dict[str, Any]:
    with TestClient(create_app(db.settings, db.engine)) as client:
        body: dict[str, Any] = client.get("/api/v1/status").json()
    return body


def held_worker(db: Any) -> None:
    """host-a holds back on the adapter's p95, host-b copies at 6,000 rows a batch."""
    held = Activity(ops_for(db.engine), "host-a:1", batch_rows=4_000)
    held.tuned({"target_batch_ms": 200.0, "max_rows_per_second": 5_000.0})
    held.saw(Readings(p95_ms=240.0, operations=500), {"p95_limit_ms": 120.0})
    held.hold(Decision(P95, 240.0, 120.0), utcnow())
    held.held(RATE, 7.0)
    held.batch(4_000, 0.18, 4_000)
    held.write(0.0)
    going = Activity(ops_for(db.engine), "host-b:2", batch_rows=6_000)
    going.tuned({"target_batch_ms": 200.0, "max_rows_per_second": 5_000.0})
    going.batch(6_000, 0.22, 6_000)
    going.write(0.0)


def test_no_backfill_running_is_said_so(db: Any) -> None:
    view = status(db)["progress"]["throttle"]
    assert view["state"] == "idle" and view["workers"] == 0 and view["waiting"] == []
    assert view["target_batch_ms"] == db.settings.backfill.target_batch_ms  # the tuning
    assert "throttle" in terminal(db) and "no backfill running" in terminal(db)


def test_a_worker_waiting_on_the_p95_shows_why_on_both_dashboards(db: Any) -> None:
    held_worker(db)
    view = status(db)["progress"]["throttle"]
    assert view["state"] == "waiting" and view["workers"] == 2
    assert [w["worker"] for w in view["waiting"]] == ["host-a:1"]
    waiting = view["waiting"][0]
    assert (waiting["reason"], waiting["reading"], waiting["limit"]) == (P95, 240.0, 120.0)
    assert waiting["why"] == "p95_latency 240 ms > 120 ms"
    assert view["batch_rows"] == 5_000 and view["target_batch_ms"] == 200.0
    assert (view["last_batch_rows"], view["last_batch_ms"]) == (5_000, 200.0)
    assert view["max_rows_per_second"] == 5_000.0
    assert view["held_seconds"][RATE] == 7.0
    assert view["summary"] == "waiting (1 of 2 workers): p95_latency 240 ms > 120 ms"

    out = terminal(db)
    assert "waiting (1 of 2 workers): p95_latency 240 ms > 120 ms" in out
    assert "host-a:1" in out
    assert "5,000 rows, target 200 ms; last 5,000 in 200 ms" in out
    assert "5,000 rows/s (held 7 s so far)" in out


def test_replication_lag_and_a_pause_and_a_tune(db: Any) -> None:
    lagging = Activity(ops_for(db.engine), "host-c:3", batch_rows=2_000)
    lagging.saw(Readings(replication_lag_seconds=42.0), {"max_replication_lag_seconds": 10.0})
    lagging.hold(Decision(LAG, 42.0, 10.0), utcnow())
    lagging.write(0.0)
    assert status(db)["progress"]["throttle"]["waiting"][0]["why"] == (
        "replication_lag 42 s > 10 s"
    )
    assert "replication_lag 42 s > 10 s" in terminal(db)

    lagging.hold(Decision(), utcnow())
    lagging.state = PAUSED
    lagging.write(0.0, force=True)
    view = status(db)["progress"]["throttle"]
    assert view["state"] == "paused" and view["waiting"] == []
    assert "paused (1 workers)" in terminal(db)

    # Finished: no worker alive; the target shown is the one a new worker would use.
    lagging.finish(0.0)
    view = status(db)["progress"]["throttle"]
    assert view["state"] == "idle" and view["target_batch_ms"] == 200.0


def test_the_web_page_has_the_throttle_panel(db: Any) -> None:
    with TestClient(create_app(db.settings, db.engine)) as client:
        page = client.get("/").text
        script = client.get("/static/dashboard.js").text
    assert 'id="throttle"' in page and 'data-testid="throttle"' in page
    assert "renderThrottle" in script and "progress.throttle" in script


def test_a_second_worker_waiting_beside_live_traffic_is_no_hold(db: Any) -> None:
    """By design beside the application: the throttle says running, and lists the wait."""
    going = Activity(ops_for(db.engine), "host-d:4.0", batch_rows=1_000)
    going.write(0.0)
    extra = Activity(ops_for(db.engine), "host-d:4.1", batch_rows=1_000)
    extra.hold(Decision(TRAFFIC, 500.0, 19.0), utcnow())
    extra.write(0.0)
    view = status(db)["progress"]["throttle"]
    assert view["state"] == "running" and view["summary"] == "running (2 workers)"
    assert view["waiting"][0]["why"] == "live_traffic 500 operations > 19 operations"
    # Held on health too: waiting.
    going.hold(Decision(P95, 240.0, 120.0), utcnow())
    going.write(1.0)
    assert status(db)["progress"]["throttle"]["state"] == "waiting"
