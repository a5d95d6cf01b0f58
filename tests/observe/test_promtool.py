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
    record_latency(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, 12.0, 30, errors=2)
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
