"""The benches run (tiny sizes), so they do not rot between measurements.

Smoke tests, not timed ones: each bench completes against a real PostgreSQL and reports
the figures BENCHMARKS.md quotes, whatever their values (the capture bench's bulk
variant verifies itself that capture brought every unified row in step).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import _drop_database, _throwaway_database

pytestmark = pytest.mark.postgres

BENCHES = Path(__file__).resolve().parent.parent / "bench"
BENCH = BENCHES / "capture.py"
TINY = ["--rows", "4", "--ops", "8", "--rounds", "2", "--json"]


@pytest.fixture
def scratch_url() -> Iterator[str]:
    admin, url, name = _throwaway_database("_bench")
    try:
        yield url
    finally:
        _drop_database(admin, name)


def test_capture_bench_runs_with_tiny_sizes(scratch_url: str) -> None:
    tiny = ["--rows", "3", "--ops", "6", "--rounds", "2", "--bulk-rows", "50"]
    done = subprocess.run(
        [sys.executable, str(BENCH), "--database-url", scratch_url, *tiny, "--bulk-rounds", "2"]
        + ["--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    single, bulk = report["single"], report["bulk"]
    assert set(single["latency_ms"]) == {"raw_off", "raw_on", "adapter"}
    assert all(len(medians) == 2 for medians in single["round_medians_ms"].values())
    assert {"raw_on / raw_off (p50)", "raw_on / adapter (p50)"} <= set(single["ratios"])
    assert all(len(seconds) == 2 for seconds in bulk["seconds"].values())
    assert bulk["ratio_on_off_paired"] > 0 and bulk["target"] == 0.35
    assert len(report["loadavg_1min"]["samples"]) == 1 + 2 + 2


def run_bench(name: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCHES / name), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.parametrize("bench", ["dual_write_overhead.py", "caller_transaction.py"])
def test_the_overhead_benches_run_with_tiny_sizes(bench: str, scratch_url: str) -> None:
    report = run_bench(bench, "--database-url", scratch_url, *TINY)
    assert report["latency_ms"] and report["ratios"]
    assert all(len(medians) == 2 for medians in report["round_medians_ms"].values())


def test_the_variants_bench_runs_every_variant_with_tiny_sizes() -> None:
    """It makes a database per variant on the server itself (and drops them)."""
    listed = subprocess.run(
        [sys.executable, str(BENCHES / "dual_write_variants.py"), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    report = run_bench("dual_write_variants.py", *TINY)
    variants = set(report["variants"])
    assert "r0010" in variants and "shipped" in variants and "r0010" in listed
    assert variants | {"legacy_only", "raw_update"} == set(report["latency_ms"])
    assert all(len(medians) == 2 for medians in report["round_medians_ms"].values())


# --- issue 14: the command path and scale --------------------------------------------


def test_the_commands_bench_times_both_commands_against_their_raw_sql(scratch_url: str) -> None:
    report = run_bench(
        "commands.py", "--database-url", scratch_url, "--rows", "3000", "--rounds", "2",
        "--library", "--json",
    )  # fmt: skip
    assert report["rows"] == 3000 and len(report["loadavg"]) == 3
    for name in ("backfill", "check", "backfill@lib", "check@lib"):
        figures = report[name]
        assert len(figures["raw_seconds"]) == len(figures["command_seconds"]) == 2
        assert figures["ratio"] > 0
    assert report["backfill"]["command_peak_rss_mb"] > 10  # the command's own, via wait4
    # Each variant's WAL and the checkpoints during it, beside its time (settled first).
    wal = report["backfill"]["wal_mb"]
    assert len(wal["raw"]) == len(wal["command"]) == 2 and min(wal["command"]) > 0
    assert len(report["backfill"]["checkpoints_during"]["command"]) == 2


def test_the_scale_bench_runs_every_step_with_tiny_sizes(scratch_url: str) -> None:
    report = run_bench(
        "scale.py", "--database-url", scratch_url, "--rows", "3000", "--changed", "20",
        "--json",
    )  # fmt: skip
    steps = report["steps"]
    assert set(steps) == {
        "backfill --workers 1",
        "backfill --workers 2",
        "check",
        "check --since",
        "archive export",
    }
    assert steps["check --since"]["rows_in_scope"] == 3 * 20
    assert all(s["ratio"] > 0 and s["command_peak_rss_mb"] > 10 for s in steps.values())


def test_the_busy_load_test_bench_runs_with_and_without_its_companions(scratch_url: str) -> None:
    tiny = ["--transactions", "20", "--concurrent", "2", "--legacy-rows", "600", "--rounds", "1"]
    on = run_bench(
        "loadtest_busy.py", "--database-url", scratch_url, *tiny, "--verify-interval", "0.5",
        "--json",
    )  # fmt: skip
    busy = on["runs"]["busy"][0]
    assert on["backfill"] and on["verify"] and len(on["p95_busy_over_alone"]) == 1
    assert "backfill_exit" in busy and "verify_runs" in busy
    assert isinstance(busy["backfill_held_back_seconds"], dict)  # what the throttle did
    alone = on["runs"]["alone"][0]
    assert alone["error_rate"] == 0.0 and alone["consistency_rate"] == 1.0
    off = run_bench(
        "loadtest_busy.py", "--database-url", scratch_url, *tiny, "--no-backfill",
        "--no-verify", "--json",
    )  # fmt: skip
    assert not off["backfill"] and "backfill_exit" not in off["runs"]["busy"][0]


def test_mode_switch_wait_bench_runs_with_tiny_sizes(scratch_url: str) -> None:
    tiny = ["--writers", "2", "--before", "0.3", "--hold", "1", "--after", "0.3"]
    report = run_bench("mode_switch_wait.py", "--database-url", scratch_url, *tiny, "--json")
    assert report["switch"]["outcome"] == "switched" and report["errors"] == 0
    for part in ("before_switch", "while_switch_waits", "after_commit"):
        assert report[part]["writes"] > 0


def test_the_stats_record_bench_runs_with_tiny_sizes() -> None:
    report = run_bench("stats_record.py", "--events", "200", "--rounds", "2", "--failed", "5")
    assert report["events"] == 200 and report["us_per_event_median"] > 0, report
