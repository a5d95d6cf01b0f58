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
