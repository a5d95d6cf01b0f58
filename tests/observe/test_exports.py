"""Prometheus rules and the Grafana dashboard use exactly the metrics the service exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from support.capture_data import captured, raw
from support.stats_data import record_latency, seed_pairs
from unistatus.api.service import create_app
from unistatus.backfill import pause, resume
from unistatus.cli import app
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
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
    record_latency(
        db.engine,
        DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY,
        12.0,
        30,
        system=LegacySystemType.CASHOUT,
    )
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
        "UnistatusLatencyP95Critical": ("unistatus_latency_p95_seconds > 0.5", "critical"),
        "UnistatusLatencyP95Warning": ("unistatus_latency_p95_seconds > 0.2", "warning"),
        "UnistatusDatabaseDown": ("unistatus_database_up == 0", "critical"),
        "UnistatusQuarantineRows": ("unistatus_quarantine_rows > 0", "warning"),
        "UnistatusReplayConflictsOpen": ("unistatus_replay_conflicts_open > 0", "warning"),
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


RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"


def runbook_alert_table() -> dict[str, dict[str, str]]:
    """docs/runbook.md's alert table: alert name -> its level, condition and action."""
    text = RUNBOOK.read_text()
    table = text[text.index("| alert | level | condition |") :].split("\n\n")[0]
    rows: dict[str, dict[str, str]] = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        name, level, condition, response, action = cells
        rows[name.strip("`")] = {"level": level, "condition": condition, "action": action}
    return rows


def snake(alert: str) -> str:
    """UnistatusLatencyP95Warning -> latency_p95_warning (the monitor's rule name)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", alert.removeprefix("Unistatus")).lower()


def test_cli_says_when_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    unwritable = [str(tmp_path / "a-file" / "y.json")]  # a file where a directory should be
    if Path("/proc").is_dir():
        unwritable.append("/proc/x/y")  # the reviewer's case
    for command in ("prometheus-rules", "grafana-dashboard"):
        for out in unwritable:
            r = CliRunner().invoke(app, ["export", command, "--out", out], catch_exceptions=False)
            assert r.exit_code == 2, r.output
            err = r.stderr.strip()
            assert err.startswith(f"error: cannot write {out}") and "\n" not in err, err
            assert "unexpected" not in err


def test_each_rule_says_what_to_do_as_the_runbooks_alert_table_does() -> None:
    table = runbook_alert_table()
    rules = prometheus_rules()["groups"][0]["rules"]
    for rule in rules:
        name = snake(rule["alert"])
        assert name in table, f"{rule['alert']}: no row `{name}` in docs/runbook.md"
        assert rule["labels"]["severity"] == table[name]["level"], name
        assert rule["annotations"]["runbook"] == table[name]["action"], name
    for key in ("summary", "runbook"):
        texts = [r["annotations"][key] for r in rules]
        assert len(set(texts)) == len(texts), f"two rules share a {key}"
    stalled = next(r for r in rules if r["alert"] == "UnistatusBackfillStalled")
    assert "restart the workers" in stalled["annotations"]["runbook"]
    assert "rollback --emergency" not in stalled["annotations"]["runbook"]


def test_the_backfill_pause_is_exposed(db: Any) -> None:
    seed_pairs(db.engine, 5)
    pause(db.engine, actor="t", reason="peak hours")
    text = TestClient(create_app(db.settings, db.engine)).get("/metrics").text
    assert "\nunistatus_backfill_paused 1.0\n" in text
    resume(db.engine, actor="t", reason="off-peak")
    text = TestClient(create_app(db.settings, db.engine)).get("/metrics").text
    assert "\nunistatus_backfill_paused 0.0\n" in text


def test_every_panel_says_what_no_data_means(db: Any) -> None:
    """Before the first check (or the first operation) some series do not exist yet:
    the panels that read them say so instead of Grafana's bare "No data"."""
    text = TestClient(create_app(db.settings, db.engine)).get("/metrics").text
    exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "unistatus_consistency_rate" not in exposed  # no check report yet
    absent_panels = []
    for panel in grafana_dashboard()["panels"]:
        used = metric_names_used(panel)
        if used - exposed:
            absent_panels.append(panel["title"])
            no_value = panel["fieldConfig"]["defaults"].get("noValue", "")
            assert no_value.strip(), f"{panel['title']}: reads {used - exposed}, no noValue"
            assert panel.get("description", "").strip(), panel["title"]
    assert "Consistency" in absent_panels
    consistency = next(p for p in grafana_dashboard()["panels"] if p["title"] == "Consistency")
    assert consistency["fieldConfig"]["defaults"]["noValue"].startswith("unknown")
    assert "unistatus check" in consistency["description"]


def test_a_panel_of_per_system_series_names_each_by_its_system() -> None:
    """The Consistency panel showed three series all labelled "consistency" (one per
    system): which system is failing could not be read (exploratory review)."""
    per_system = {"unistatus_consistency_rate", "unistatus_error_rate"}
    for panel in grafana_dashboard()["panels"]:
        for target in panel.get("targets", []):
            if target["expr"] in per_system:
                assert "{{system}}" in target["legendFormat"], (panel["title"], target)
