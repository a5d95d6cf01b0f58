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
    """At most ``slots`` holders; waiters are admitted strictly in arrival order.

    The gate counts the slots each thread holds (:meth:`held`), under its lock, in the
    same step that takes or hands one over: a holder interrupted just as ``acquire``
    returned (before it could keep the answer) can still tell it holds one, and give it
    back.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a gate needs at least one slot, got {slots}")
        self.slots = slots
        self._free = slots
        self._lock = threading.Lock()
        # A waiter: its ticket (released when a slot is handed over) and its thread.
        self._waiters: deque[tuple[threading.Lock, int]] = deque()
        self._held: dict[int, int] = {}

    def after_fork_in_child(self) -> None:
        """Every slot free again: their holders and waiters are threads of the parent."""
        self._free = self.slots
        self._lock = threading.Lock()
        self._waiters = deque()
        self._held = {}

    def held(self) -> int:
        """Slots the calling thread holds now."""
        with self._lock:
            return self._held.get(threading.get_ident(), 0)

    def _count(self, thread: int, change: int) -> None:
        """``thread`` holds ``change`` more slots (under the lock)."""
        count = self._held.get(thread, 0) + change
        if count > 0:
            self._held[thread] = count
        else:
            self._held.pop(thread, None)

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a slot, waiting at most ``timeout`` seconds (None: for ever)."""
        me = threading.get_ident()
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                self._count(me, 1)
                return True
            ticket = threading.Lock()
            ticket.acquire()
            waiter = (ticket, me)
            self._waiters.append(waiter)
        try:
            handed = ticket.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))
        except BaseException:
            # KeyboardInterrupt (a signal) in the wait: out of the queue, or, if the slot
            # was handed over meanwhile, passed on; else it would go to nobody for good.
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    raise
            self.release()
            raise
        if handed:
            return True  # handed over (and counted) by release()
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return False
        return True  # handed over just as the wait timed out: the slot is ours

    def release(self) -> None:
        """Give the slot to the longest waiter, or back to the gate."""
        with self._lock:
            if self._free >= self.slots and not self._waiters:
                raise RuntimeError("FairGate.release() without a matching acquire()")
            self._count(threading.get_ident(), -1)
            if self._waiters:
                ticket, thread = self._waiters.popleft()
                self._count(thread, 1)  # the waiter's from now on, before it wakes
                ticket.release()
            else:
                self._free += 1

    @property
    def waiting(self) -> int:
        """Threads queued for a slot now."""
        return len(self._waiters)
