"""Webhook notifications against real HTTP servers on 127.0.0.1 (one fine, one failing)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from unistatus.config import load_settings
from unistatus.observe import alerts
from unistatus.observe.notify import Notification, Notifier


class Receiver:
    """A local webhook receiver: records JSON bodies, answers ``status`` after ``delay``."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.bodies: list[dict[str, object]] = []
        self.hits = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                receiver.hits += 1
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if receiver.delay:
                    time.sleep(receiver.delay)
                if receiver.status < 300:
                    receiver.bodies.append(json.loads(body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.status = status
        self.delay = delay
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def note() -> Notification:
    return Notification(
        name="consistency_critical",
        level="critical",
        state="firing",
        message="consistency 98.000% (threshold < 99.000%)",
        value=0.98,
        threshold=0.99,
    )


def test_payload_is_slack_compatible_and_structured(receivers: list[Receiver]) -> None:
    ok = Receiver()
    receivers.append(ok)
    deliveries = Notifier([ok.url], timeout=2).send(note())
    assert [d.ok for d in deliveries] == [True]
    body = ok.bodies[0]
    assert isinstance(body["text"], str) and "consistency_critical" in body["text"]
    assert "CRITICAL" in body["text"] and "FIRING" in body["text"]
    assert body["alert"] == "consistency_critical"
    assert body["level"] == "critical" and body["state"] == "firing"
    assert body["value"] == 0.98 and body["threshold"] == 0.99


def test_failing_webhook_is_retried_and_never_stops_the_others(receivers: list[Receiver]) -> None:
    bad, good = Receiver(status=500), Receiver()
    receivers += [bad, good]
    notifier = Notifier([bad.url, good.url], timeout=2, retries=2, backoff=0.01)
    deliveries = notifier.send(note())
    assert [d.ok for d in deliveries] == [False, True]
    assert bad.hits == 3  # first try + 2 retries
    assert deliveries[0].status_code == 500 and deliveries[0].attempts == 3
    assert len(good.bodies) == 1


def test_client_errors_are_not_retried(receivers: list[Receiver]) -> None:
    bad = Receiver(status=404)
    receivers.append(bad)
    deliveries = Notifier([bad.url], timeout=2, retries=3, backoff=0.01).send(note())
    assert not deliveries[0].ok and bad.hits == 1


def test_slow_and_unreachable_webhooks_are_bounded(receivers: list[Receiver]) -> None:
    slow = Receiver(delay=2.0)
    receivers.append(slow)
    closed = Receiver()
    dead_url = closed.url
    closed.close()  # nothing listens there any more
    notifier = Notifier([slow.url, dead_url], timeout=0.3, retries=1, backoff=0.01)
    started = time.monotonic()
    deliveries = notifier.send(note())
    assert time.monotonic() - started < 3.0
    assert [d.ok for d in deliveries] == [False, False]
    assert all(d.error for d in deliveries)


def test_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISTATUS_WEBHOOK_URLS", "http://127.0.0.1:1/a, http://127.0.0.1:1/b")
    notifier = Notifier.from_settings(load_settings())
    assert notifier.urls == ["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"]


def test_monitor_keeps_going_with_a_failing_webhook(db, receivers: list[Receiver]) -> None:
    from support.stats_data import seed_pairs
    from unistatus.config import AutoResponses
    from unistatus.migration.check import run_check

    bad, good = Receiver(status=503), Receiver()
    receivers += [bad, good]
    seed_pairs(db.engine, 100, drift=3)
    run_check(db.engine, db.settings)
    settings = db.settings.model_copy(
        update={
            "webhook_urls": [bad.url, good.url],
            "webhook_timeout_seconds": 1.0,
            "auto_responses": AutoResponses(rollback_on_critical_consistency=False),
        }
    )
    states = {s.name: s for s in alerts.evaluate(db.engine, settings)}
    assert states["consistency_critical"].firing
    assert [b["alert"] for b in good.bodies if b["state"] == "firing"].count(
        "consistency_critical"
    ) == 1
    alerts.evaluate(db.engine, settings)  # no repeat
    assert [b["alert"] for b in good.bodies if b["state"] == "firing"].count(
        "consistency_critical"
    ) == 1
