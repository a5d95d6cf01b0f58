"""Prometheus' own tool judges what we expose and export (Debian's ``promtool``).

``promtool check metrics`` lints a real scrape of ``/metrics`` (base units, counter
names), ``promtool check rules`` the exported alert rules. Without promtool the tests
skip with the reason, except under CI=true, where they fail (``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import IN_CI
from support.serving import serving
from support.stats_data import record_latency, seed_pairs
from unistatus.api.service import create_app
from unistatus.backfill import run_backfill
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.migration.check import run_check
from unistatus.observe import alerts
from unistatus.observe.exports import prometheus_rules, to_yaml
from unistatus.observe.notify import Notifier


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "no promtool on PATH (apt-get install -y prometheus)"
        if IN_CI:
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(f"SKIPPING PROMTOOL TEST: {message}")
    return path


def _run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)


def _scrape(db: Any) -> str:
    """/metrics over HTTP from a running service, with every source populated."""
    seed_pairs(db.engine, 50)
    run_backfill(db.engine, db.settings, systems=[LegacySystemType.CASHOUT])
    run_check(db.engine, db.settings)
    record_latency(
        db.engine,
        DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY,
        12.0,
        30,
        errors=2,
        system=LegacySystemType.CASHOUT,
    )
    alerts.evaluate(db.engine, db.settings, notifier=Notifier())
    with serving(create_app(db.settings, db.engine)) as base:
        with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
            return str(response.read().decode())


def test_a_real_scrape_passes_promtool_check_metrics(sqlite_db: Any, promtool: str) -> None:
    text = _scrape(sqlite_db)
    assert "unistatus_operations_total" in text and "_bucket{" in text  # populated
    result = _run([promtool, "check", "metrics"], stdin=text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_the_exported_rules_pass_promtool_check_rules(tmp_path: Path, promtool: str) -> None:
    rules = tmp_path / "unistatus-rules.yml"
    rules.write_text(to_yaml(prometheus_rules()) + "\n")
    result = _run([promtool, "check", "rules", str(rules)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _rule(name: str) -> dict[str, Any]:
    return next(r for r in prometheus_rules()["groups"][0]["rules"] if r["alert"] == name)


def test_the_exported_rules_fire_as_the_monitor_does(tmp_path: Path, promtool: str) -> None:
    """``promtool test rules``: Prometheus' rule engine on made-up series.

    A backfill that has not moved for an hour is stalled, unless it was paused on purpose
    (now or within that hour); latency thresholds are in seconds, the metrics' unit.
    """
    (tmp_path / "rules.yml").write_text(to_yaml(prometheus_rules()) + "\n")
    stalled, warning = _rule("UnistatusBackfillStalled"), _rule("UnistatusLatencyP95Warning")
    ratio = 'unistatus_backfill_progress_ratio{system="CASHOUT"}'

    def annotations(rule: dict[str, Any], description: str) -> dict[str, str]:
        return {**rule["annotations"], "description": description}

    def backfill(paused: str, expected: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "interval": "1m",
            "input_series": [
                {"series": ratio, "values": "0.5x150"},
                {"series": "unistatus_backfill_paused", "values": paused},
            ],
            "alert_rule_test": [
                {"eval_time": "120m", "alertname": stalled["alert"], "exp_alerts": expected}
            ],
        }

    fired = [
        {
            "exp_labels": {**stalled["labels"], "system": "CASHOUT"},
            "exp_annotations": annotations(
                stalled, "Backfill of CASHOUT has not moved for an hour (50% done)."
            ),
        }
    ]
    tests = [
        backfill("0x150", fired),  # running, not moving: stalled
        backfill("1x150", []),  # paused all along: not stalled
        backfill("0x100 1x10 0x40", []),  # paused 40 minutes ago: not yet stalled
        {
            "interval": "1m",
            "input_series": [
                {"series": 'unistatus_latency_p95_seconds{system="ESCROW"}', "values": "0.3x10"},
                {"series": 'unistatus_latency_p95_seconds{system="CASHOUT"}', "values": "0.01x10"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "5m",
                    "alertname": warning["alert"],
                    "exp_alerts": [
                        {
                            # Only the system whose own p95 crossed.
                            "exp_labels": {**warning["labels"], "system": "ESCROW"},
                            "exp_annotations": annotations(warning, "ESCROW p95 300ms."),
                        }
                    ],
                },
                {"eval_time": "5m", "alertname": "UnistatusLatencyP95Critical", "exp_alerts": []},
            ],
        },
    ]
    spec = tmp_path / "rules_test.yml"
    spec.write_text(to_yaml({"rule_files": ["rules.yml"], "tests": tests}) + "\n")
    result = _run([promtool, "test", "rules", str(spec)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_writer_seen_for_the_first_time_in_unified_only_fires(
    tmp_path: Path, promtool: str
) -> None:
    """A new rogue writer's counter series appears already at 1: `increase()` over it
    saw no rise, so the exported rule never fired for the writer that matters most (a
    real Prometheus, exploratory review); a writer's later writes fire as before."""
    (tmp_path / "rules.yml").write_text(to_yaml(prometheus_rules()) + "\n")
    rule = _rule("UnistatusBypassWritesUnifiedOnly")
    writer = 'unistatus_bypass_writes_total{system="CASHOUT",writer="bypass:rogue/postgres"}'
    mode = 'unistatus_mode{system="CASHOUT",mode="UNIFIED_ONLY"}'
    fired = [
        {
            "exp_labels": {
                **rule["labels"],
                "system": "CASHOUT",
                "writer": "bypass:rogue/postgres",
            },
            "exp_annotations": {
                **rule["annotations"],
                "description": "bypass:rogue/postgres wrote CASHOUT in UNIFIED_ONLY (mirrored "
                "into unified, nothing lost); convert that code path. unistatus capture "
                "status.",
            },
        }
    ]
    tests = [
        {
            "interval": "1m",
            "input_series": [
                {"series": writer, "values": "_x10 1x10"},  # first seen at minute 11
                {"series": mode, "values": "1x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "12m", "alertname": rule["alert"], "exp_alerts": fired},
                {"eval_time": "19m", "alertname": rule["alert"], "exp_alerts": []},
            ],
        },
        {
            # A known writer after a scrape gap of a quarter of an hour, on another
            # instance label (a redeploy): no news, no alert (review).
            "interval": "1m",
            "input_series": [
                {"series": writer, "values": "1x10 _x14 _x1"},
                {"series": writer.replace("}", ',instance="b"}'), "values": "_x25 1x5"},
                {"series": mode, "values": "1x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "27m", "alertname": rule["alert"], "exp_alerts": []},
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {"series": writer, "values": "1x10 2x10"},  # a known writer writes again
                {"series": mode, "values": "1x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "12m", "alertname": rule["alert"], "exp_alerts": fired},
            ],
        },
    ]
    spec = tmp_path / "rules_test.yml"
    spec.write_text(to_yaml({"rule_files": ["rules.yml"], "tests": tests}) + "\n")
    result = _run([promtool, "test", "rules", str(spec)])
    assert result.returncode == 0, result.stdout + result.stderr


def _rule_test(tmp_path: Path, promtool: str, tests: list[dict[str, Any]]) -> None:
    (tmp_path / "rules.yml").write_text(to_yaml(prometheus_rules()) + "\n")
    spec = tmp_path / "rules_test.yml"
    spec.write_text(to_yaml({"rule_files": ["rules.yml"], "tests": tests}) + "\n")
    result = _run([promtool, "test", "rules", str(spec)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_backfill_just_begun_is_not_stalled_before_an_hour(tmp_path: Path, promtool: str) -> None:
    """``changes(ratio[60m]) == 0`` with ``for: 0m`` held as soon as the range had a few
    equal samples: the rule fired 2 minutes after a series began though it says "not
    moved for an hour" (SRE report); the monitor waits STALL_SECONDS (an hour)."""
    stalled = _rule("UnistatusBackfillStalled")
    fired = [
        {
            "exp_labels": {**stalled["labels"], "system": "CASHOUT"},
            "exp_annotations": {
                **stalled["annotations"],
                "description": "Backfill of CASHOUT has not moved for an hour (40% done).",
            },
        }
    ]
    series = [
        {"series": 'unistatus_backfill_progress_ratio{system="CASHOUT"}', "values": "0.4+0x80"},
        {"series": "unistatus_backfill_paused", "values": "0+0x80"},
    ]
    name = stalled["alert"]
    _rule_test(
        tmp_path,
        promtool,
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": name, "exp_alerts": []},
                    {"eval_time": "59m", "alertname": name, "exp_alerts": []},
                    {"eval_time": "66m", "alertname": name, "exp_alerts": fired},
                ],
            }
        ],
    )


def test_a_service_whose_metrics_are_gone_fires(tmp_path: Path, promtool: str) -> None:
    """Every rule compared unistatus_* series: with ``serve`` dead or /metrics out of
    reach there were none, and nothing fired (SRE report)."""
    rule = _rule("UnistatusMetricsAbsent")
    fired = [{"exp_labels": {**rule["labels"]}, "exp_annotations": rule["annotations"]}]
    up = {"series": "unistatus_database_up", "values": "1x10"}
    name = rule["alert"]
    _rule_test(
        tmp_path,
        promtool,
        [
            {
                "interval": "1m",
                "input_series": [up],
                "alert_rule_test": [{"eval_time": "10m", "alertname": name, "exp_alerts": []}],
            },
            {
                # Scraped for 10 minutes, then gone (the series goes stale 5 minutes on).
                "interval": "1m",
                "input_series": [up],
                "alert_rule_test": [
                    {"eval_time": "16m", "alertname": name, "exp_alerts": []},
                    {"eval_time": "25m", "alertname": name, "exp_alerts": fired},
                ],
            },
        ],
    )
