"""The backfill workers' Prometheus families: how many, their batches, why they wait."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from unistatus.backfill.health import HEALTH_REASONS, HOLD_REASONS, LAG, LOCKS, P95, REASONS

__all__ = ["backfill_worker_families"]

MS_PER_S = 1000.0

# The health probes' readings in base units: the p95 is kept in ms, Prometheus wants s.
_PROBE_UNITS = {P95: ("p95_ms", MS_PER_S), LAG: ("replication_lag_seconds", 1.0)}
_PROBE_LIMITS = {
    P95: ("p95_limit_ms", MS_PER_S),
    LAG: ("max_replication_lag_seconds", 1.0),
    LOCKS: ("max_lock_waits", 1.0),
}


def backfill_worker_families(workers: list[dict[str, Any]]) -> Iterator[Any]:
    """The backfill's workers: how many, their batch size, why they hold back.

    Gauges are over the workers alive now (0 without any); the held seconds are a
    counter over every worker's row. A reading the backend cannot give (SQLite's
    replication lag, say) is NaN.
    """
    alive = [w for w in workers if w["alive"]]
    yield GaugeMetricFamily(
        "unistatus_backfill_workers", "Backfill workers alive (every host)", value=len(alive)
    )
    throttled = GaugeMetricFamily(
        "unistatus_backfill_throttled",
        "Backfill workers holding back now, by reason (adapter p95, replica lag, lock "
        "waits; an extra worker beside live traffic)",
        labels=["reason"],
    )
    for reason in HOLD_REASONS:
        throttled.add_metric([reason], sum(1 for w in alive if w["throttle"]["reason"] == reason))
    yield throttled
    held = CounterMetricFamily(
        "unistatus_backfill_throttle_seconds",
        "Seconds backfill workers held back, by reason (health, the rate limit, a pause)",
        labels=["reason"],
    )
    for reason in REASONS:
        held.add_metric(
            [reason], sum(float(w["throttled_seconds"].get(reason, 0.0)) for w in workers)
        )
    yield held
    sizes = [int(w["batch_rows"]) for w in alive]
    yield GaugeMetricFamily(
        "unistatus_backfill_batch_rows",
        "Rows of the next backfill batch (mean over the workers alive; 0: none)",
        value=sum(sizes) / len(sizes) if sizes else 0,
    )
    lasts = [float(w["last_batch_ms"]) for w in alive if w["last_batch_ms"] is not None]
    yield GaugeMetricFamily(
        "unistatus_backfill_batch_duration_seconds",
        "How long the last backfill batch took (mean over the workers alive; 0: none)",
        value=sum(lasts) / len(lasts) / MS_PER_S if lasts else 0,
    )
    latest = max(alive, key=lambda w: str(w["updated_at"]), default=None)
    readings = latest["readings"] if latest is not None else {}
    reading = GaugeMetricFamily(
        "unistatus_backfill_health_reading",
        "The backfill throttle's latest reading per probe (p95 and lag in seconds, lock "
        "waits in sessions; NaN: unknown or not applicable)",
        labels=["probe"],
    )
    limit = GaugeMetricFamily(
        "unistatus_backfill_health_limit",
        "Above this reading the backfill holds back, per probe (NaN: no limit)",
        labels=["probe"],
    )
    for reason in HEALTH_REASONS:
        key, per = _PROBE_UNITS.get(reason, ("lock_waits", 1.0))
        reading.add_metric([reason], _scaled(readings.get(key), per))
        key, per = _PROBE_LIMITS[reason]
        limit.add_metric([reason], _scaled(readings.get(key), per))
    yield reading
    yield limit


def _scaled(value: Any, per: float) -> float:
    return float("nan") if value is None else float(value) / per
