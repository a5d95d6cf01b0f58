"""A first-come, first-served limit on how many threads do something at once.

The adapter admits at most ``settings.write_concurrency`` writes of one process to the
database at a time, and queues the rest in arrival order. On a database with few cores,
fifty writes in flight do not finish sooner than eight: they only make PostgreSQL (and
the client) switch between more backends, and the unlucky ones wait far longer than the
rest. A fair queue in front keeps the work the server does at its best rate and makes
every write wait about as long as every other (see BENCHMARKS.md, "write concurrency").

``threading.Semaphore`` is not fair: a thread arriving just as a slot frees can take it
before a thread that has waited longer (barging), which is what stretches the tail. Here
a released slot is handed directly to the longest-waiting thread.
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["FairGate"]


class FairGate:
    """At most ``slots`` holders; waiters are admitted strictly in arrival order."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a gate needs at least one slot, got {slots}")
        self.slots = slots
        self._free = slots
        self._lock = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()

    def after_fork_in_child(self) -> None:
        """Every slot free again: their holders and waiters are threads of the parent."""
        self._free = self.slots
        self._lock = threading.Lock()
        self._waiters = deque()

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a slot, waiting at most ``timeout`` seconds (None: for ever)."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            ticket = threading.Lock()
            ticket.acquire()
            self._waiters.append(ticket)
        try:
            handed = ticket.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))
        except BaseException:
            # KeyboardInterrupt (a signal) in the wait: out of the queue, or, if the slot
            # was handed over meanwhile, passed on; else it would go to nobody for good.
            with self._lock:
                if ticket in self._waiters:
                    self._waiters.remove(ticket)
                    raise
            self.release()
            raise
        if handed:
            return True  # handed over by release()
        with self._lock:
            if ticket in self._waiters:
                self._waiters.remove(ticket)
                return False
        return True  # handed over just as the wait timed out: the slot is ours

    def release(self) -> None:
        """Give the slot to the longest waiter, or back to the gate."""
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            elif self._free < self.slots:
                self._free += 1
            else:
                raise RuntimeError("FairGate.release() without a matching acquire()")

    @property
    def waiting(self) -> int:
        """Threads queued for a slot now."""
        return len(self._waiters)
