"""A worker's sense of time, and its pace under a rate (``--max-rows-per-second``, the
ramp's cap beside live traffic).

A low rate owes long waits: at 0.05 rows/s a batch of 100 rows is 2,000 s. One sleep of
that length would outlive any tune made meanwhile (``backfill tune`` promises a change
"before the next batch", not 30 minutes later), hide the worker from ``backfill status``
(its row stops beating) and, for absurd rates, overflow the platform's sleep. So the
wait is taken in slices, and the worker re-reads its tuning between them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from unistatus.clock import utcnow

# The longest one sleep of a wait for the rate: a tune (or a stop) reaches a waiting
# worker within about this long.
PACE_SLICE_SECONDS = 0.5


@dataclass(frozen=True)
class Clock:
    """The worker's sense of time; tests pass their own (batch durations, holds)."""

    timer: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime] = utcnow


class Pacer:
    """Keeps a worker at or under ``rate`` rows per second (None: unbounded)."""

    def __init__(self, rate: float | None, clock: Clock) -> None:
        self.clock = clock
        self.rate = rate
        self.reset()

    def reset(self) -> None:
        self._started = self.clock.timer()
        self._rows = 0.0

    def set_rate(self, rate: float | None) -> None:
        """A new rate. Rows not yet paid for are owed at it (none without a rate), so a
        lower rate mid-wait is no burst and a higher one shortens the wait; credit from
        a slow stretch is not carried over."""
        if rate == self.rate:
            return
        owed = self.ahead() * self.rate if self.rate else 0.0
        self.rate = rate
        self.reset()
        if rate:
            self._rows = owed

    def ahead(self) -> float:
        """Seconds this worker is ahead of its rate (0: not ahead, or no rate)."""
        if not self.rate:
            return 0.0
        return max(0.0, self._rows / self.rate - (self.clock.timer() - self._started))

    def after(self, rows: int, between: Callable[[float], bool] | None = None) -> float:
        """Sleep as long as ``rows`` more rows put this worker ahead; the seconds slept.

        In slices of at most :data:`PACE_SLICE_SECONDS`, ``between(seconds)`` called
        after each: it may change the rate (the rest of the wait is then what the new
        rate asks, nothing when it is off) or return False to end the wait.
        """
        if not self.rate:
            return 0.0
        self._rows += rows
        # Counted down by the slices asked for, not by the timer alone: a clock whose
        # sleep passes no time (tests) still ends its wait.
        remaining, slept = self.ahead(), 0.0
        while remaining > 0:
            step = min(remaining, PACE_SLICE_SECONDS)
            self.clock.sleep(step)
            slept += step
            remaining -= step
            rate = self.rate
            if between is not None and not between(step):
                break
            if self.rate != rate:
                remaining = self.ahead()
        return slept
