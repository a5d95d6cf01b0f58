"""A client-side deadline for a probe's database work (``/health``).

The probe's reads are bounded on the server (``health_timeout_ms``: statement and lock
timeouts), which cannot fire while a request never reaches the server: through a
black-holed link ``/health`` waited as long as the link stayed silent, holding a worker
thread and a pooled connection per probe, and ``serve`` waited for it on SIGTERM. The
work runs in a daemon thread of its own here, waited for at most the deadline; past it
the probe answers without it, and the thread ends when the connection's network bounds
(unistatus.db.network) or the link do. While one such run is still waiting past its
deadline, later probes answer at once from that state instead of starting another;
after RETRY_AFTER_DEADLINES deadlines it is left behind and a new run tried, at most
MAX_ABANDONED left waiting at a time (a hung proxy is ended by no bound).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

__all__ = ["MAX_ABANDONED", "RETRY_AFTER_DEADLINES", "ProbeDeadline", "probe_deadline_ms"]

T = TypeVar("T")

# The deadline: this many health_timeout_ms (a probe makes a few reads, each statement
# bounded by twice it on the server), at least MIN_DEADLINE_MS; NO_BOUND_DEADLINE_MS
# when health_timeout_ms is 0 (no server-side bound).
DEADLINE_FACTOR = 8
MIN_DEADLINE_MS = 1_000
NO_BOUND_DEADLINE_MS = 10_000
# A run still stuck after this many deadlines is left behind and a new one tried (a hung
# proxy that keeps acknowledging is ended by no network bound, and "down" for ever would
# outlast the database's recovery); at most MAX_ABANDONED are left waiting at a time.
RETRY_AFTER_DEADLINES = 3
MAX_ABANDONED = 2


def probe_deadline_ms(health_timeout_ms: int) -> int:
    """How long a probe waits for its database work, in milliseconds."""
    if not health_timeout_ms:
        return NO_BOUND_DEADLINE_MS
    return max(MIN_DEADLINE_MS, DEADLINE_FACTOR * health_timeout_ms)


class ProbeDeadline(Generic[T]):
    def __init__(self, deadline_ms: int, name: str) -> None:
        self.deadline_ms = deadline_ms
        self.name = name
        self._lock = threading.Lock()
        self._pending: Future[T] | None = None
        self._started = 0.0
        self._abandoned: list[Future[T]] = []

    def run(self, work: Callable[[], T]) -> T | None:
        """``work()``'s result (or what it raised), or None when it did not end within
        the deadline. A run still going is joined (within what is left of its deadline),
        not started again."""
        with self._lock:
            future = self._pending
            if future is not None and not future.done() and self._stuck_for_good():
                self._abandoned.append(future)
                future = None
            if future is None or future.done():
                future = self._pending = Future()
                self._started = time.monotonic()
                threading.Thread(
                    target=_resolve, args=(future, work), name=self.name, daemon=True
                ).start()
            left = self._started + self.deadline_ms / 1000 - time.monotonic()
        if left <= 0 and not future.done():
            return None  # an earlier run is stuck past its deadline: no new wait
        try:
            return future.result(timeout=max(left, 0))
        except FutureTimeout:
            return None

    def _stuck_for_good(self) -> bool:
        """The pending run has waited RETRY_AFTER_DEADLINES deadlines, and fewer than
        MAX_ABANDONED runs are left waiting (called under the lock)."""
        self._abandoned = [f for f in self._abandoned if not f.done()]
        waited = time.monotonic() - self._started
        return (
            waited > RETRY_AFTER_DEADLINES * self.deadline_ms / 1000
            and len(self._abandoned) < MAX_ABANDONED
        )


def _resolve(future: Future[T], work: Callable[[], T]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(work())
    except BaseException as exc:  # handed to the waiting probe, raised there
        future.set_exception(exc)
