"""Prometheus rules and the Grafana dashboard use exactly the metrics the service exposes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from support.capture_data import captured, raw
from support.stats_data import record_latency, seed_pairs
from unistatus.api.service import create_app
from unistatus.cli import app
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration.check import run_check
from unistatus.observe import alerts
from unistatus.observe.exports import (
    METRICS,
    grafana_dashboard,
    metric_names_used,
    prometheus_rules,
    to_yaml,
)
from unistatus.observe.notify import Notifier


def exposed_names(db: Any) -> set[str]:
    """Scrape /metrics with every source populated (a bypass writer seen by the capture
    too); return every sample name."""
    seed_pairs(db.engine, 50)
    run_check(db.engine, db.settings)
    record_latency(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, 12.0, 30)
    alerts.evaluate(db.engine, db.settings, notifier=Notifier())
    with captured(db):
        set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="t")
        raw(db, "UPDATE cashouts SET amount = amount + 1 WHERE id = 1")
        text = TestClient(create_app(db.settings, db.engine)).get("/metrics").text
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_metric_used_by_rules_and_dashboard_is_exposed(db: Any) -> None:
    exposed = exposed_names(db)
    assert set(METRICS) == exposed, set(METRICS) ^ exposed
    used = metric_names_used(prometheus_rules()) | metric_names_used(grafana_dashboard())
    assert used, "no metric found in the exports"
    assert used <= exposed, used - exposed


def test_rules_mirror_the_spec_thresholds() -> None:
    rules = {r["alert"]: r for r in prometheus_rules()["groups"][0]["rules"]}
    expected = {
        "UnistatusConsistencyCritical": ("unistatus_consistency_alert_rate < 0.99", "critical"),
        "UnistatusConsistencyWarning": ("unistatus_consistency_alert_rate < 0.999", "warning"),
        "UnistatusErrorRateCritical": ("unistatus_error_rate > 0.01", "critical"),
        "UnistatusErrorRateWarning": ("unistatus_error_rate > 0.001", "warning"),
        "UnistatusLatencyP95Critical": ("unistatus_latency_p95_ms > 500", "critical"),
        "UnistatusLatencyP95Warning": ("unistatus_latency_p95_ms > 200", "warning"),
        "UnistatusDatabaseDown": ("unistatus_database_up == 0", "critical"),
        "UnistatusQuarantineRows": ("unistatus_quarantine_rows > 0", "warning"),
    }
    for name, (expr, severity) in expected.items():
        assert rules[name]["expr"] == expr
        assert rules[name]["labels"]["severity"] == severity
    assert "[60m]" in rules["UnistatusBackfillStalled"]["expr"]
    bypass = rules["UnistatusBypassWritesUnifiedOnly"]
    assert bypass["labels"]["severity"] == "warning"
    assert "(increase(unistatus_bypass_writes_total[5m])) > 0" in bypass["expr"]
    assert 'unistatus_mode{mode="UNIFIED_ONLY"} == 1' in bypass["expr"]


def test_yaml_round_trips() -> None:
    data = prometheus_rules()
    assert yaml.safe_load(to_yaml(data)) == data
    odd = {"a": [], "b": {}, "c": [{"x": None, "y": True, "z": 1.5}], "d e": 'it\'s: "q"'}
    assert yaml.safe_load(to_yaml(odd)) == odd


def test_cli_writes_the_files(tmp_path: Path) -> None:
    runner = CliRunner()
    rules = tmp_path / "rules.yml"
    r = runner.invoke(
        app, ["export", "prometheus-rules", "--out", str(rules)], catch_exceptions=False
    )
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(rules.read_text()) == prometheus_rules()
    board = tmp_path / "dash.json"
    r = runner.invoke(
        app, ["export", "grafana-dashboard", "--out", str(board)], catch_exceptions=False
    )
    assert r.exit_code == 0, r.output
    loaded = json.loads(board.read_text())
    assert loaded["uid"] == "unistatus-migration" and len(loaded["panels"]) >= 10
    r = runner.invoke(app, ["export", "grafana-dashboard"], catch_exceptions=False)
    assert json.loads(r.stdout) == grafana_dashboard()
