"""The adapter operations' Prometheus families, each series per legacy system.

Two kinds, both labelled ``system`` (``CASHOUT``, ``ESCROW``, ``EXCHANGE``) so each
system's gate figures can be read apart in Prometheus:

- the window gauges (``unistatus_latency_p95_seconds``, ``..._p99_seconds``,
  ``unistatus_error_rate``, ``unistatus_throughput_per_second``): each system's own
  operations over the service's window, the figures its gates and the monitor's per
  system alerts judge. A system that ran no operation in the window has no p95/p99
  series (unknown, never 0); its error rate and throughput are 0.
- the cumulative families (``unistatus_operation_latency_seconds`` histogram,
  ``unistatus_operations_total``, ``..._errors_total``, ``..._rolled_back_total``, ``..._refused_total``): sums
  over every stats row, per (operation, mode, system); ``system=""`` (no system, in
  Prometheus' terms) for operations stored without one. The errors again by what failed
  them (``unistatus_operation_errors_by_kind_total``, labelled ``kind`` too: a role's
  CONNECTION LIMIT or max_connections, ``outcome_unknown``, the write queue's
  ``queue_timeout``, ``interrupted``, or ``database``), every kind of every series, 0
  included: a family of its own, so that the errors' and operations' series keep
  the same labels (an error rate divides one by the other).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

__all__ = ["MS_PER_SECOND", "WINDOW_GAUGES", "operation_families", "window_families"]

# Latencies are measured and stored in ms; Prometheus wants base units (seconds).
MS_PER_SECOND = 1000.0

# (WindowStats.as_dict key, metric name, help, divisor to the base unit)
WINDOW_GAUGES: tuple[tuple[str, str, str, float], ...] = (
    (
        "p95_ms",
        "unistatus_latency_p95_seconds",
        "Each legacy system's p95 latency of its writes over the window (seconds)",
        MS_PER_SECOND,
    ),
    (
        "p99_ms",
        "unistatus_latency_p99_seconds",
        "Each legacy system's p99 latency of its writes over the window (seconds)",
        MS_PER_SECOND,
    ),
    (
        "error_rate",
        "unistatus_error_rate",
        "Each legacy system's error rate of its writes over the window (0..1)",
        1.0,
    ),
    (
        "throughput_per_s",
        "unistatus_throughput_per_second",
        "Each legacy system's writes per second over the window",
        1.0,
    ),
)


def window_families(per_system: dict[str, dict[str, Any]]) -> Iterator[GaugeMetricFamily]:
    """The window gauges from each system's ``WindowStats.as_dict()`` (by system value)."""
    for key, name, text, per_unit in WINDOW_GAUGES:
        family = GaugeMetricFamily(name, text, labels=["system"])
        for system, perf in sorted(per_system.items()):
            value = perf.get(key)
            if value is not None:
                family.add_metric([system], float(value) / per_unit)
        yield family


def operation_families(totals: list[dict[str, Any]]) -> Iterator[Any]:
    """The cumulative families from :func:`unistatus.observe.stats.stats_totals`."""
    labels = ["operation", "mode", "system"]
    hist = HistogramMetricFamily(
        "unistatus_operation_latency_seconds",
        "Adapter operation latency (seconds), all processes",
        labels=labels,
    )
    ops = CounterMetricFamily(
        "unistatus_operations", "Adapter operations, all processes", labels=labels
    )
    errors = CounterMetricFamily(
        "unistatus_operation_errors", "Failed adapter operations, all processes", labels=labels
    )
    rolled_back = CounterMetricFamily(
        "unistatus_operations_rolled_back",
        "Adapter writes their caller's transaction rolled back (not in operations, "
        "errors or latency), all processes",
        labels=labels,
    )
    refused = CounterMetricFamily(
        "unistatus_operations_refused",
        "Adapter writes refused for their caller's input, nothing written (not in "
        "operations, errors or latency), all processes",
        labels=labels,
    )
    by_kind = CounterMetricFamily(
        "unistatus_operation_errors_by_kind",
        "Failed adapter operations by what failed them (connection_limit, "
        "outcome_unknown, queue_timeout, interrupted, database), all processes",
        labels=[*labels, "kind"],
    )
    mismatches = CounterMetricFamily(
        "unistatus_shadow_mismatches", "Shadow-read mismatches, all processes"
    )
    add: list[tuple[Callable[..., None], str]] = [
        (ops.add_metric, "count"),
        (errors.add_metric, "errors"),
        (rolled_back.add_metric, "rolled_back"),
        (refused.add_metric, "refused"),
    ]
    total_mismatches = 0
    for t in totals:
        values = [t["operation"], t["mode"], t.get("system") or ""]
        hist.add_metric(values, t["buckets"], t["sum_ms"] / MS_PER_SECOND)
        for method, key in add:
            method(values, t[key])
        for kind, n in t["errors_by_kind"].items():
            by_kind.add_metric([*values, kind], n)
        total_mismatches += t["shadow_mismatches"]
    mismatches.add_metric([], total_mismatches)
    yield hist
    yield ops
    yield errors
    yield by_kind
    yield rolled_back
    yield refused
    yield mismatches
