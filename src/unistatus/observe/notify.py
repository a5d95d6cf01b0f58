"""Notifications: the log always, and webhooks (JSON POST) when configured.

A webhook payload carries a Slack-compatible ``text`` field plus the structured fields
(alert, level, state, value, threshold, ...), so the same URL list works for Slack and
for a team's own receiver. Delivery is bounded (timeout, a few retries with backoff)
and never raises: a failing or slow receiver must not stop the monitor.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.redact import redact_webhook
from unistatus.shown import as_text

__all__ = ["Delivery", "Notification", "Notifier"]

log = logging.getLogger("unistatus.observe.notify")

LEVEL_ICON = {
    "critical": ":rotating_light:",
    "warning": ":warning:",
    "info": ":information_source:",
}
LOG_LEVEL = {"critical": logging.CRITICAL, "warning": logging.WARNING, "info": logging.INFO}


@dataclass(frozen=True)
class Notification:
    """One thing worth telling people: an alert that fired or resolved, or an event."""

    name: str
    level: str
    state: str
    message: str
    value: float | None = None
    threshold: float | None = None
    at: datetime = field(default_factory=utcnow)
    details: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        icon = LEVEL_ICON.get(self.level, "")
        verb = {"firing": "FIRING", "resolved": "RESOLVED"}.get(self.state, self.state.upper())
        return f"{icon} [{self.level.upper()}] {verb} {self.name}: {self.message}".strip()

    def payload(self) -> dict[str, Any]:
        return {
            # Slack's (and Mattermost's) text: '&', '<' and '>' escaped as they require,
            # so a writer's name ('<!channel>', '<https://x|click>') is no ping or link.
            "text": _chat_escaped(self.text),
            "alert": self.name,
            "level": self.level,
            "state": self.state,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            "at": self.at.isoformat(),
            "details": self.details or {},
            "source": "unistatus",
        }


@dataclass(frozen=True)
class Delivery:
    """How one webhook delivery went."""

    url: str
    ok: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None


class Notifier:
    """Sends notifications to the log and to every webhook URL; never raises."""

    def __init__(
        self,
        urls: Sequence[str] = (),
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.urls = [u for u in urls if u]
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self._transport = transport
        # The most recent notifications (bounded: the monitor runs for weeks).
        self.sent: deque[Notification] = deque(maxlen=1000)

    @classmethod
    def from_settings(cls, settings: Settings) -> Notifier:
        return cls(settings.webhook_urls, timeout=settings.webhook_timeout_seconds)

    def send(self, notification: Notification) -> list[Delivery]:
        log.log(
            LOG_LEVEL.get(notification.level, logging.INFO),
            "%s",
            as_text(notification.text),  # one line: a writer's name forges none
            extra={"alert": notification.payload()},
        )
        self.sent.append(notification)
        if not self.urls:
            return []
        payload = notification.payload()
        try:
            with httpx.Client(timeout=self.timeout, transport=self._transport) as client:
                return [self._post(client, url, payload) for url in self.urls]
        except Exception as exc:  # a broken client setup must not stop the monitor either
            log.error("webhook delivery failed before sending: %s", exc)
            return [Delivery(url, False, 0, error=str(exc)) for url in self.urls]

    def _post(self, client: httpx.Client, url: str, payload: dict[str, Any]) -> Delivery:
        error: str | None = None
        status: int | None = None
        for attempt in range(1, self.retries + 2):
            try:
                response = client.post(url, json=payload)
                status = response.status_code
                if response.is_success:
                    return Delivery(url, True, attempt, status)
                error = f"HTTP {status}"
                if status < 500 and status != 429:
                    break  # the receiver refuses this payload: retrying will not help
            except Exception as exc:  # timeouts, refused connections, bad URLs
                error = f"{type(exc).__name__}: {exc}"
            if attempt <= self.retries:
                time.sleep(self.backoff * attempt)
        log.error("webhook %s failed after %d attempt(s): %s", redact_webhook(url), attempt, error)
        return Delivery(url, False, attempt, status, error)


def _chat_escaped(text: str) -> str:
    """``text`` as a chat message's text: its control characters escaped, and the three
    characters Slack's markup gives a meaning ('<!channel>', links) as entities."""
    return as_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
