"""The capture bench runs (tiny sizes), so it does not rot between measurements.

A smoke test, not a timed one: it checks the bench completes against a real PostgreSQL
(the bulk variant verifies itself that capture brought every unified row in step) and
reports every figure BENCHMARKS.md quotes, whatever their values.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import _drop_database, _throwaway_database

pytestmark = pytest.mark.postgres

BENCH = Path(__file__).resolve().parent.parent / "bench" / "capture.py"


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
