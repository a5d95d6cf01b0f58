"""How fast a worker copies beside live traffic: gently at first, faster while live
writes stay healthy.

The p95 throttle (:mod:`~unistatus.backfill.health`) reads the adapter's statistics,
which every process flushes every ``stats_flush_seconds`` (5 s) and which are judged
over ``p95_window_seconds`` (15 s): it learns of the harm a batch does seconds after
the batch. A worker that copied at full speed the moment traffic appeared would slow
live writes for those seconds, every time traffic came back. So, when the worker sees
live sessions (:meth:`~unistatus.db.dialect.DialectOps.live_sessions`, read as it is
now), it copies at a rate cap: first :data:`START_SHARE` of its own speed in a quiet
database, then :data:`GROWTH` times more each time the p95 of the operations made
since the last change (:func:`~unistatus.backfill.health.p95_since`) is in the lower
half of the room the limit leaves above the baseline (:func:`grow_below`), half as much
each time it is above the limit, and the same in between (congestion control's probing
for what the path takes, growing by a factor rather than a step because each step
waits for a flush; aiming below the limit, not at it, so that the p95 it settles at is
within it). Once the cap reaches the quiet speed it no longer binds. Without live
sessions, without a p95 limit to judge by, or on a backend that cannot tell (SQLite),
there is no cap: the worker copies as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["GROWTH", "START_SHARE", "Ramp", "grow_below"]

# The first cap beside live traffic: this share of the worker's quiet speed.
START_SHARE = 0.1
# The cap's growth per healthy reading, and its cut per unhealthy one.
GROWTH = 1.5
CUT = 0.5
# Never slower than this many rows a second (a cap must still make progress).
MIN_RATE = 100.0
# Without a baseline (an absolute max_p95_ms only): grow below this share of the limit.
UNKNOWN_BASELINE_SHARE = 0.9
# No live session for this long (not one probe's gap between statements): no cap.
QUIET_SECONDS = 2.0
# No adapter operation flushed for this long under a cap: the sessions at work are not
# live writes (a report, a dump, an operator's open transaction): nothing to harm, grow.
NO_WRITES_SECONDS = 10.0


def grow_below(limit_ms: float, baseline_ms: float | None) -> float:
    """The p95 under which the cap grows: halfway from the baseline to the limit
    (:data:`UNKNOWN_BASELINE_SHARE` of the limit without a baseline)."""
    if baseline_ms is None or baseline_ms >= limit_ms:
        return limit_ms * UNKNOWN_BASELINE_SHARE
    return baseline_ms + (limit_ms - baseline_ms) / 2


@dataclass
class Ramp:
    """The rate cap of one worker beside live traffic (None: no cap)."""

    cap: float | None = None
    changed_at: datetime | None = None  # when the cap last changed: readings after it judge it
    quiet_since: datetime | None = None  # since when no live session was seen

    def update(
        self,
        *,
        live_sessions: int | None,
        quiet_rate: float | None,
        limit_ms: float | None,
        p95_since_change: float | None,
        now: datetime,
        baseline_ms: float | None = None,
        live_writes: bool = True,
    ) -> None:
        """The cap after one look: ``live_sessions`` other sessions at work now,
        ``quiet_rate`` rows/s of this worker without a cap (None: not measured yet),
        ``limit_ms`` the p95 limit and ``baseline_ms`` the p95 without the backfill
        (None: unknown), ``p95_since_change`` the p95 of the operations made since
        :attr:`changed_at` (None: too few yet), ``live_writes`` whether the adapter's
        statistics hold live writes (the p95 window's operations)."""
        if quiet_rate is None or limit_ms is None or live_sessions is None:
            self.restart()
            return
        if not live_sessions:
            self.quiet_since = self.quiet_since or now
            if (now - self.quiet_since).total_seconds() >= QUIET_SECONDS:
                self.restart()
            return
        self.quiet_since = None
        if self.cap is None:
            self._set(max(quiet_rate * START_SHARE, MIN_RATE), now)
        elif p95_since_change is not None and p95_since_change > limit_ms:
            self._set(max(self.cap * CUT, MIN_RATE), now)
        elif self._healthy(p95_since_change, limit_ms, baseline_ms, live_writes, now):
            self._set(max(min(self.cap * GROWTH, quiet_rate), MIN_RATE), now)
        elif p95_since_change is not None:
            self.changed_at = now  # near the limit: kept, and judged on what follows

    def binding(self, quiet_rate: float | None) -> float | None:
        """The cap while it binds: below the worker's quiet speed."""
        cap = self.cap
        return cap if cap is not None and quiet_rate is not None and cap < quiet_rate else None

    def restart(self) -> None:
        """No cap; the next traffic starts gently again (after a hold for the p95, too)."""
        self.cap, self.changed_at, self.quiet_since = None, None, None

    def _healthy(
        self,
        p95: float | None,
        limit_ms: float,
        baseline_ms: float | None,
        live_writes: bool,
        now: datetime,
    ) -> bool:
        """Room to grow: the p95 since the change is low enough, or no live write was
        flushed for :data:`NO_WRITES_SECONDS` under this cap (nothing to harm)."""
        if p95 is not None:
            return p95 <= grow_below(limit_ms, baseline_ms)
        held = 0.0 if self.changed_at is None else (now - self.changed_at).total_seconds()
        return not live_writes and held >= NO_WRITES_SECONDS

    def _set(self, cap: float, now: datetime) -> None:
        self.cap, self.changed_at = cap, now
