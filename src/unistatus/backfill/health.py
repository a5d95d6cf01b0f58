"""Whether the database can take the next batch: the throttle's readings and decision.

Read by every worker between batches (at most every ``health_interval_seconds``), and
again while it holds back:

- the adapter's p95 latency, merged over every process from the shared operation
  statistics (:func:`unistatus.observe.stats.window`): live writes come first;
- how far the furthest replica is behind (PostgreSQL's ``pg_stat_replication``);
- how many sessions wait for a lock on the legacy tables or ``unified_transactions``.

The last two are capabilities of the dialect (:class:`~unistatus.db.dialect.DialectOps`);
a reading the backend cannot give (SQLite) is None, and None never holds a batch back:
an unknown figure is not a bad one. :func:`decide` is a pure function of the readings
and the limits, so the policy is tested with readings made up on the spot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.db.dialect import DialectOps
from unistatus.db.server_clock import database_lead
from unistatus.errors import StorageError
from unistatus.observe.stats import window

# Why a worker holds back. The first three are health; an extra worker's wait beside
# live traffic, the pacing of --max-rows-per-second and an operator's pause are counted
# alongside them.
P95 = "p95_latency"
LAG = "replication_lag"
LOCKS = "lock_waits"
# The second and later workers of one process copy while the database is quiet, and
# wait while the adapter serves live traffic (at least p95_min_operations operations in
# the p95 window): two workers in a quiet hour, one beside the application.
TRAFFIC = "live_traffic"
# A worker without a p95 of live writes from before the job (the job began in a quiet
# hour) holds when live traffic appears, until it has learned that p95 from operations
# made while it held: it cannot tell "slowed by the backfill" without it.
BASELINE = "p95_baseline"
RATE = "max_rows_per_second"
# The first worker's rate cap beside live traffic (backfill.ramp), counted as pacing.
RAMP = "traffic_ramp"
PAUSED = "paused"
HEALTH_REASONS = (P95, LAG, LOCKS)
# What a worker's probe holds it back for, in that order (decide).
HOLD_REASONS = (*HEALTH_REASONS, BASELINE, TRAFFIC)
REASONS = (*HOLD_REASONS, RATE, RAMP, PAUSED)
UNITS = {P95: "ms", LAG: "s", LOCKS: "sessions", BASELINE: "operations", TRAFFIC: "operations"}

# A limit derived from the baseline is never closer to it than this: a p95 of a few ms
# moves by more than 20% between two quiet windows.
BASELINE_MARGIN_MS = 5.0
# The baseline: the adapter's p95 over this long before the backfill job started.
BASELINE_WINDOW_SECONDS = 300.0


@dataclass(frozen=True)
class Limits:
    """Above which reading a worker holds back (None: that probe never holds it)."""

    max_p95_ms: float | None = None
    baseline_p95_ms: float | None = None
    p95_over_baseline: float | None = None
    max_replication_lag_seconds: float | None = None
    max_lock_waits: int | None = None
    # An extra worker: held while the adapter served more operations than this in the
    # p95 window (None: never; the first worker of a process).
    max_live_operations: int | None = None
    # A worker learning the baseline: held while the adapter served more operations than
    # this in the p95 window (None: it has a baseline, or needs none).
    learning_baseline: int | None = None

    @property
    def p95_limit_ms(self) -> float | None:
        """The stricter of the absolute limit and the one relative to the baseline."""
        limits = []
        if self.max_p95_ms is not None:
            limits.append(self.max_p95_ms)
        if self.baseline_p95_ms is not None and self.p95_over_baseline is not None:
            limits.append(
                max(
                    self.baseline_p95_ms * self.p95_over_baseline,
                    self.baseline_p95_ms + BASELINE_MARGIN_MS,
                )
            )
        return min(limits) if limits else None

    def limit(self, reason: str) -> float | None:
        if reason == P95:
            return self.p95_limit_ms
        if reason == LAG:
            return self.max_replication_lag_seconds
        if reason == LOCKS:
            return None if self.max_lock_waits is None else float(self.max_lock_waits)
        if reason == BASELINE:
            return None if self.learning_baseline is None else float(self.learning_baseline)
        if reason == TRAFFIC:
            return None if self.max_live_operations is None else float(self.max_live_operations)
        return None


@dataclass(frozen=True)
class Readings:
    """One look at the database's health; None: unknown or not applicable."""

    p95_ms: float | None = None
    operations: int = 0  # adapter operations the p95 is computed from
    replication_lag_seconds: float | None = None
    lock_waits: int | None = None
    live_sessions: int | None = None  # other sessions at work now (the ramp's, not a hold's)

    def reading(self, reason: str) -> float | None:
        value: float | int | None = {
            P95: self.p95_ms,
            LAG: self.replication_lag_seconds,
            LOCKS: self.lock_waits,
            BASELINE: self.operations,
            TRAFFIC: self.operations,
        }.get(reason)
        return None if value is None else float(value)

    def as_dict(self) -> dict[str, Any]:
        return {
            "p95_ms": None if self.p95_ms is None else round(self.p95_ms, 3),
            "operations": self.operations,
            "replication_lag_seconds": self.replication_lag_seconds,
            "lock_waits": self.lock_waits,
            "live_sessions": self.live_sessions,
        }


@dataclass(frozen=True)
class Decision:
    """Hold back (``reason`` set) or go; with the reading and the limit it crossed."""

    reason: str | None = None
    reading: float | None = None
    limit: float | None = None

    @property
    def throttled(self) -> bool:
        return self.reason is not None

    def describe(self) -> str:
        if self.reason is None:
            return "healthy"
        unit = UNITS.get(self.reason, "")
        return f"{self.reason} {self.reading:g} {unit} > {self.limit:g} {unit}".replace("  ", " ")


GO = Decision()


def decide(readings: Readings, limits: Limits) -> Decision:
    """The first reason whose reading is above its limit (p95, lag, locks; then live
    traffic for a worker learning the baseline, and for an extra worker)."""
    for reason in HOLD_REASONS:
        value, limit = readings.reading(reason), limits.limit(reason)
        if value is not None and limit is not None and value > limit:
            return Decision(reason, value, limit)
    return GO


def traffic_appeared(engine: sa.Engine, ops: DialectOps, live_at_probe: int | None) -> bool:
    """Live sessions now where the last probe saw none (read between probes, each batch,
    so the ramp's cap applies within a batch of traffic appearing, not a probe interval
    later; unknown or failed: no). Nothing to read when the last probe saw some."""
    if live_at_probe != 0:
        return False
    try:
        with engine.connect() as conn:
            return bool(ops.live_sessions_if_known(conn))
    except sa.exc.DBAPIError:
        return False


def read_health(
    engine: sa.Engine,
    ops: DialectOps,
    tables: list[sa.Table],
    *,
    window_seconds: float,
    min_operations: int,
    now: datetime,
) -> Readings:
    """Read every probe now. The p95 is None below ``min_operations`` operations."""
    try:
        with engine.connect() as conn:
            lead = database_lead(conn)  # the window's "now" on the statistics' clock
            lag = ops.replication_lag_seconds(conn)
            waits = ops.lock_waits(conn, tables)
            live = ops.live_sessions_if_known(conn)  # last: its failure spoils nothing
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"cannot read the database's health: {exc.orig}") from None
    stats = window(engine, window_seconds, now=now + lead)
    return Readings(
        p95_ms=stats.p95_ms if stats.count >= min_operations else None,
        operations=stats.count,
        replication_lag_seconds=lag,
        lock_waits=waits,
        live_sessions=live,
    )


def baseline_p95(engine: sa.Engine, before: datetime, min_operations: int) -> float | None:
    """The adapter's p95 over the five minutes before ``before`` (the job's start):
    what live writes looked like without the backfill. None: too few operations."""
    at = before + _skew(engine)
    stats = window(engine, BASELINE_WINDOW_SECONDS, now=at, until=at)
    if stats.fine_buckets is not None and not stats.reads_fine:
        # Read from the coarse buckets (flushed before revision 0019) while the live
        # readings come from the fine ones: not comparable. Learned again instead.
        return None
    return stats.p95_ms if stats.count >= min_operations else None


def p95_since(
    engine: sa.Engine, since: datetime, now: datetime, min_operations: int
) -> float | None:
    """The adapter's p95 over the statistics intervals that began at or after ``since``
    (a hold began, the ramp's cap changed): operations made under what the worker did
    since. None: too few operations flushed yet (every process flushes every
    ``stats_flush_seconds``)."""
    seconds = max((now - since).total_seconds(), 0.001)
    skew = _skew(engine)
    stats = window(engine, seconds, now=now + skew, started_since=since + skew)
    return stats.p95_ms if stats.count >= min_operations else None


def _skew(engine: sa.Engine) -> timedelta:
    """The database's clock less this host's: the operation statistics are stamped on
    the database's (adapter.stats), the times given here are this host's (a host ahead
    read an empty window, its p95 "too few operations": a review)."""
    try:
        with engine.connect() as conn:
            return database_lead(conn)
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"cannot read the database's clock: {exc.orig}") from None
