"""Prometheus alert rules and a Grafana dashboard for teams that run their own stack.

Both use exactly the metric names ``/metrics`` exposes (:data:`METRICS`; a test scrapes
the service and checks every name used here exists), and the alert rules use the
thresholds of :data:`unistatus.observe.alert_rules.THRESHOLDS`, so Prometheus alerts on
the same conditions as ``unistatus monitor``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from unistatus.observe.alert_rules import ACTIONS, THRESHOLDS

__all__ = ["METRICS", "grafana_dashboard", "metric_names_used", "prometheus_rules", "to_yaml"]

# Every sample name the service exposes (histogram and counter samples included).
METRICS: dict[str, str] = {
    "unistatus_database_up": "gauge",
    "unistatus_source_up": "gauge",
    "unistatus_mode": "gauge",
    "unistatus_phase": "gauge",
    "unistatus_latency_p95_seconds": "gauge",
    "unistatus_latency_p99_seconds": "gauge",
    "unistatus_error_rate": "gauge",
    "unistatus_throughput_per_second": "gauge",
    "unistatus_operation_latency_seconds_bucket": "histogram",
    "unistatus_operation_latency_seconds_sum": "histogram",
    "unistatus_operation_latency_seconds_count": "histogram",
    "unistatus_operations_total": "counter",
    "unistatus_operation_errors_total": "counter",
    "unistatus_operation_errors_by_kind_total": "counter",
    "unistatus_operations_rolled_back_total": "counter",
    "unistatus_operations_refused_total": "counter",
    "unistatus_shadow_mismatches_total": "counter",
    "unistatus_consistency_rate": "gauge",
    "unistatus_consistency_alert_rate": "gauge",
    "unistatus_last_check_timestamp_seconds": "gauge",
    "unistatus_verification_lag_seconds": "gauge",
    "unistatus_verification_watermark_timestamp_seconds": "gauge",
    "unistatus_backfill_progress_ratio": "gauge",
    "unistatus_backfill_paused": "gauge",
    "unistatus_backfill_workers": "gauge",
    "unistatus_backfill_throttled": "gauge",
    "unistatus_backfill_throttle_seconds_total": "counter",
    "unistatus_backfill_batch_rows": "gauge",
    "unistatus_backfill_batch_duration_seconds": "gauge",
    "unistatus_backfill_health_reading": "gauge",
    "unistatus_backfill_health_limit": "gauge",
    "unistatus_repair_queue_open": "gauge",
    "unistatus_quarantine_rows": "gauge",
    "unistatus_replay_conflicts_open": "gauge",
    "unistatus_mapping_coverage_ratio": "gauge",
    "unistatus_capture_enabled": "gauge",
    "unistatus_bypass_writes_total": "counter",
    "unistatus_alert_firing": "gauge",
}


def _seconds(ms: float) -> float:
    """A threshold in ms (as the monitor keeps them) in the base unit of the metrics."""
    return ms / 1000.0


def _rule(
    name: str, expr: str, severity: str, summary: str, description: str, for_: str = "2m"
) -> dict[str, Any]:
    """The Prometheus rule of the monitor's rule ``name`` (latency_p95_warning becomes
    UnistatusLatencyP95Warning), with the runbook's action for it."""
    return {
        "alert": "Unistatus" + "".join(part.capitalize() for part in name.split("_")),
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, "service": "unistatus"},
        "annotations": {"summary": summary, "description": description, "runbook": ACTIONS[name]},
    }


def prometheus_rules() -> dict[str, Any]:
    """Alert rules mirroring the monitor's thresholds (critical / warning)."""
    t = THRESHOLDS
    stall = f"{int(t['backfill_stalled'] // 60)}m"
    ratio = "unistatus_backfill_progress_ratio"
    rules = [
        _rule(
            "database_down",
            "unistatus_database_up == 0",
            "critical",
            "unistatus cannot reach its database",
            "A component is down: the migration database does not answer.",
            "1m",
        ),
        _rule(
            "consistency_critical",
            f"unistatus_consistency_alert_rate < {t['consistency_critical']}",
            "critical",
            "Consistency below 99%",
            "Latest check report: {{ $value | humanizePercentage }} consistent. "
            "unistatus monitor rolls back (emergency) when its auto response is on.",
            "0m",
        ),
        _rule(
            "consistency_warning",
            f"unistatus_consistency_alert_rate < {t['consistency_warning']}",
            "warning",
            "Consistency below 99.9%",
            "Latest check report: {{ $value | humanizePercentage }} consistent; schedule a repair.",
            "0m",
        ),
        _rule(
            "error_rate_critical",
            f"unistatus_error_rate > {t['error_rate_critical']}",
            "critical",
            "Adapter error rate above 1%",
            "{{ $labels.system }} error rate {{ $value | humanizePercentage }} over the "
            "service's window.",
        ),
        _rule(
            "error_rate_warning",
            f"unistatus_error_rate > {t['error_rate_warning']}",
            "warning",
            "Adapter error rate above 0.1%",
            "{{ $labels.system }} error rate {{ $value | humanizePercentage }} over the "
            "service's window.",
        ),
        _rule(
            "latency_p95_critical",
            f"unistatus_latency_p95_seconds > {_seconds(t['latency_p95_critical'])}",
            "critical",
            "p95 latency above 500 ms",
            "{{ $labels.system }} p95 {{ $value | humanizeDuration }}. With the unified side primary and > 20% above "
            "the baseline, unistatus monitor rolls back to legacy primary.",
        ),
        _rule(
            "latency_p95_warning",
            f"unistatus_latency_p95_seconds > {_seconds(t['latency_p95_warning'])}",
            "warning",
            "p95 latency above 200 ms",
            "{{ $labels.system }} p95 {{ $value | humanizeDuration }}.",
        ),
        _rule(
            "backfill_stalled",
            # A backfill paused on purpose (now or within the hour) is not stalled.
            # Unmoved over the last 5 minutes, and so for the hour of `for` (the
            # monitor's STALL_SECONDS): a range of an hour alone held as soon as it had
            # two equal samples, 2 minutes into a series.
            f"({ratio} > 0 and {ratio} < 1 and changes({ratio}[5m]) == 0) "
            f"unless on() max_over_time(unistatus_backfill_paused[{stall}]) == 1",
            "warning",
            "Backfill stalled: no progress for more than 1 hour",
            "Backfill of {{ $labels.system }} has not moved for an hour "
            "({{ $value | humanizePercentage }} done).",
            stall,
        ),
        _rule(
            "metrics_absent",
            # No series at all: `serve` dead, or /metrics out of Prometheus' reach. Every
            # other rule compares unistatus_* series, so none of them fires then. A
            # Prometheus rule only: the monitor cannot see its own absence.
            "absent(unistatus_database_up)",
            "critical",
            "unistatus exposes no metrics: serve is down or /metrics unreachable",
            "No unistatus_database_up series for 5 minutes: no other unistatus rule can "
            "fire, and serve's alert evaluation and automated responses are not running.",
            "5m",
        ),
        _rule(
            "repair_queue_not_empty",
            "unistatus_repair_queue_open > 0",
            "warning",
            "Unresolved entries in the repair queue",
            "{{ $value }} entries in the repair queue.",
            "15m",
        ),
        _rule(
            "quarantine_rows",
            "unistatus_quarantine_rows > 0",
            "warning",
            "Unmappable legacy rows in the quarantine",
            "{{ $value }} rows (backfill, or a bypass writer's unmappable value); "
            "See unistatus diagnose; fix the data or the mapping, then "
            "unistatus backfill --retry-quarantine.",
            "0m",
        ),
        _rule(
            "replay_conflicts_open",
            "unistatus_replay_conflicts_open > 0",
            "warning",
            "Changes a rollback's replay kept aside wait for a decision",
            "{{ $value }} open replay conflicts (legacy held something else than the "
            "change expected); see unistatus rollback conflicts.",
            "0m",
        ),
        _rule(
            "bypass_writes_unified_only",
            # A writer seen for the first time: its series appears at 1 or more, where
            # increase() sees no rise. New: none of its series (any instance) in the hour
            # before the last 5 minutes (a scrape gap or a redeploy is no news).
            "(sum by (system, writer) (increase(unistatus_bypass_writes_total[5m])) > 0 "
            "or (sum by (system, writer) (unistatus_bypass_writes_total) unless on(system, "
            "writer) sum by (system, writer) (max_over_time(unistatus_bypass_writes_total"
            "[1h] offset 5m)))) "
            'and on(system) unistatus_mode{mode="UNIFIED_ONLY"} == 1',
            "warning",
            "A writer bypasses unistatus and writes the frozen legacy tables",
            "{{ $labels.writer }} wrote {{ $labels.system }} in UNIFIED_ONLY (mirrored into "
            "unified, nothing lost); convert that code path. unistatus capture status.",
            "0m",
        ),
    ]
    return {"groups": [{"name": "unistatus-migration", "interval": "30s", "rules": rules}]}


# Panels whose series do not exist yet on a new installation: what they show instead of
# Grafana's bare "No data" (noValue), and why (the panel's description). Before the first
# check the consistency is unknown, never 100%.
NO_CHECK_YET = (
    "Before the first `unistatus check` there is no report, so no series: the consistency "
    "is unknown (not 100%) until a check runs."
)
NO_OPERATIONS = (
    "No series until an adapter records an operation (adapters record them unless "
    "record_stats=False or UNISTATUS_RECORD_STATS=false)."
)
NO_DATA: dict[str, tuple[str, str]] = {
    "Firing alerts": ("none firing", "Alerts firing now; empty while none fires."),
    "p95 latency": (
        "no operations in the window",
        "p95 of every process's adapter operations over the service's window (5 min), "
        "one value per legacy system. " + NO_OPERATIONS,
    ),
    "Consistency": (
        "unknown: no check yet",
        "Consistency rate of the latest stored check report (`unistatus check`). " + NO_CHECK_YET,
    ),
    "Latency quantiles (all processes)": ("no operations recorded yet", NO_OPERATIONS),
    "Operations and errors per second": ("no operations recorded yet", NO_OPERATIONS),
    "Age of the latest check report": (
        "unknown: no check yet",
        "Time since the latest check report was stored. " + NO_CHECK_YET,
    ),
}


def _panel(
    pid: int,
    title: str,
    kind: str,
    exprs: list[tuple[str, str]],
    x: int,
    y: int,
    w: int = 6,
    h: int = 5,
    unit: str | None = None,
    thresholds: list[tuple[str, float | None]] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    no_data = NO_DATA.get(title)
    if no_data:
        defaults["noValue"] = no_data[0]
    if thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": c, "value": v} for c, v in thresholds],
        }
    return {
        "id": pid,
        "title": title,
        **({"description": no_data[1]} if no_data else {}),
        "type": kind,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def grafana_dashboard() -> dict[str, Any]:
    """The migration dashboard as a Grafana dashboard (JSON model)."""
    t = THRESHOLDS
    panels = [
        _panel(1, "Phase", "stat", [("unistatus_phase", "{{system}}")], 0, 0, 4, 4),
        _panel(2, "Mode", "stat", [("unistatus_mode == 1", "{{system}} {{mode}}")], 4, 0, 8, 4),
        _panel(
            3,
            "Database",
            "stat",
            [("unistatus_database_up", "up")],
            12,
            0,
            4,
            4,
            thresholds=[("red", None), ("green", 1)],
        ),
        _panel(
            4,
            "Firing alerts",
            "table",
            [("unistatus_alert_firing == 1", "{{alert}} ({{level}})")],
            16,
            0,
            8,
            4,
        ),
        _panel(
            5,
            "p95 latency",
            "stat",
            [("unistatus_latency_p95_seconds", "{{system}}")],
            0,
            4,
            unit="s",
            thresholds=[
                ("green", None),
                ("yellow", _seconds(t["latency_p95_warning"])),
                ("red", _seconds(t["latency_p95_critical"])),
            ],
        ),
        _panel(
            6,
            "Error rate",
            "stat",
            [("unistatus_error_rate", "{{system}}")],
            6,
            4,
            unit="percentunit",
            thresholds=[
                ("green", None),
                ("yellow", t["error_rate_warning"]),
                ("red", t["error_rate_critical"]),
            ],
        ),
        _panel(
            7,
            "Throughput",
            "stat",
            [("unistatus_throughput_per_second", "{{system}}")],
            12,
            4,
            unit="ops",
        ),
        _panel(
            8,
            "Consistency",
            "stat",
            [("unistatus_consistency_rate", "{{system}}")],
            18,
            4,
            unit="percentunit",
            thresholds=[
                ("red", None),
                ("yellow", t["consistency_critical"]),
                ("green", t["consistency_warning"]),
            ],
        ),
        _panel(
            9,
            "Latency quantiles (all processes)",
            "timeseries",
            [
                (
                    f"histogram_quantile({q}, sum by (le) "
                    "(rate(unistatus_operation_latency_seconds_bucket[5m])))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            0,
            9,
            12,
            8,
            unit="s",
        ),
        _panel(
            10,
            "Operations and errors per second",
            "timeseries",
            [
                ("sum by (operation) (rate(unistatus_operations_total[5m]))", "{{operation}}"),
                (
                    "sum by (operation) (rate(unistatus_operation_errors_total[5m]))",
                    "errors {{operation}}",
                ),
                (
                    "sum by (kind) (rate(unistatus_operation_errors_by_kind_total[5m]))",
                    "errors: {{kind}}",
                ),
                ("rate(unistatus_shadow_mismatches_total[5m])", "shadow mismatches"),
            ],
            12,
            9,
            12,
            8,
            unit="ops",
        ),
        _panel(
            11,
            "Backfill progress per system",
            "bargauge",
            [("unistatus_backfill_progress_ratio", "{{system}}")],
            0,
            17,
            12,
            6,
            unit="percentunit",
        ),
        _panel(
            12,
            "Mapping coverage",
            "stat",
            [("unistatus_mapping_coverage_ratio", "coverage")],
            12,
            17,
            4,
            6,
            unit="percentunit",
        ),
        _panel(
            13,
            "Repair queue / quarantine / replay conflicts",
            "stat",
            [
                ("unistatus_repair_queue_open", "repair queue"),
                ("unistatus_quarantine_rows", "quarantine"),
                ("unistatus_replay_conflicts_open", "replay conflicts"),
            ],
            16,
            17,
            8,
            6,
        ),
        _panel(
            14,
            "Sources of figures",
            "table",
            [("unistatus_source_up", "{{source}}")],
            0,
            23,
            12,
            6,
        ),
        _panel(
            15,
            "Age of the latest check report",
            "stat",
            [("time() - unistatus_last_check_timestamp_seconds", "age")],
            12,
            23,
            12,
            6,
            unit="s",
        ),
    ]
    return {
        "title": "unistatus: status migration",
        "uid": "unistatus-migration",
        "tags": ["unistatus", "migration"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": panels,
    }


_NAME = re.compile(r"\bunistatus_[a-z0-9_]+\b")


def metric_names_used(document: dict[str, Any]) -> set[str]:
    """Every ``unistatus_*`` metric name in the PromQL expressions of a rules/dashboard."""
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    exprs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    return {m for e in exprs for m in _NAME.findall(e)}


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter for plain data (strings are JSON-quoted: valid YAML)."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = []
        for k, v in value.items():
            key = json.dumps(str(k)) if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k)) else k
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{key}:\n{to_yaml(v, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {to_yaml(v)}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        lines = []
        for item in value:
            text = to_yaml(item, indent + 2)
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}- {text.lstrip()}")
            else:
                lines.append(f"{pad}- {text}")
        return "\n".join(lines)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(str(value))
