"""/metrics shows why the backfill holds back: workers alive, throttled{reason}, the
seconds held per reason, the batch size, each probe's reading and limit. Workers' rows
are written through the workers' own code (Activity), then scraped from the service."""

from __future__ import annotations

import math
import shutil
import subprocess
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from support.stats_data import seed_pairs
from unistatus.api.service import create_app
from unistatus.backfill import read_workers, run_backfill
from unistatus.backfill.activity import Activity
from unistatus.backfill.health import LOCKS, P95, PAUSED, RATE, Decision, Readings
from unistatus.clock import utcnow
from unistatus.db.dialect import ops_for
from unistatus.db.tables_backfill import backfill_workers as W
from unistatus.domain.statuses import LegacySystemType


def samples(db: Any) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    text = TestClient(create_app(db.settings, db.engine)).get("/metrics").text
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("unistatus_backfill_")
    }
    return text, found


def worker(db: Any, name: str, batch_rows: int) -> Activity:
    return Activity(ops_for(db.engine), name, batch_rows=batch_rows)


def test_the_throttle_of_every_worker_is_in_the_metrics(db: Any) -> None:
    _, before = samples(db)
    assert before[("unistatus_backfill_workers", ())] == 0
    assert before[("unistatus_backfill_throttled", (("reason", P95),))] == 0
    assert math.isnan(before[("unistatus_backfill_health_reading", (("probe", P95),))])

    held = worker(db, "host-a:1", 4_000)
    held.saw(Readings(p95_ms=240.0, operations=500, lock_waits=0), {"p95_limit_ms": 120.0})
    held.hold(Decision(P95, 240.0, 120.0), utcnow())
    held.held(P95, 12.5)
    held.held(RATE, 1.5)
    held.batch(4_000, 0.18, 4_000)
    held.write(0.0)
    going = worker(db, "host-b:2", 6_000)
    going.held(LOCKS, 3.0)
    going.batch(6_000, 0.22, 6_000)
    going.write(0.0)
    gone = worker(db, "host-c:3", 1_000)
    gone.held(P95, 100.0)
    gone.finish(0.0)  # finished: not alive, but its held seconds still count

    _, after = samples(db)
    assert after[("unistatus_backfill_workers", ())] == 2
    assert after[("unistatus_backfill_throttled", (("reason", P95),))] == 1
    assert after[("unistatus_backfill_throttled", (("reason", LOCKS),))] == 0
    seconds = "unistatus_backfill_throttle_seconds_total"
    assert after[(seconds, (("reason", P95),))] == 112.5
    assert after[(seconds, (("reason", LOCKS),))] == 3.0
    assert after[(seconds, (("reason", RATE),))] == 1.5
    assert after[("unistatus_backfill_batch_rows", ())] == 5_000
    assert after[("unistatus_backfill_batch_duration_seconds", ())] == pytest.approx(0.2)
    # The probes as the most recent worker saw them (host-b: nothing read yet, so the
    # earlier one's p95 reading is not there): base units, NaN where unknown.
    readings = {
        labels[0][1]: value
        for (name, labels), value in after.items()
        if name == "unistatus_backfill_health_reading"
    }
    assert set(readings) == {P95, "replication_lag", LOCKS}
    assert all(math.isnan(v) for v in readings.values())


def test_a_scrape_with_a_throttled_worker_passes_promtool(db: Any) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("SKIPPING PROMTOOL TEST: no promtool on PATH")
    held = worker(db, "host-a:1", 4_000)
    held.saw(Readings(p95_ms=240.0, operations=500), {"p95_limit_ms": 120.0})
    held.hold(Decision(P95, 240.0, 120.0), utcnow())
    held.write(0.0)
    text, found = samples(db)
    assert found[("unistatus_backfill_health_reading", (("probe", P95),))] == 0.24
    assert found[("unistatus_backfill_health_limit", (("probe", P95),))] == 0.12
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_the_held_seconds_never_go_down_when_old_workers_are_forgotten(db: Any) -> None:
    """A backfill start removes the rows of workers gone for a week: their held seconds
    left the counter with them, and a counter that goes down reads as a reset, so
    ``rate()`` counted the whole remaining total again (SRE report)."""
    seconds = ("unistatus_backfill_throttle_seconds_total", (("reason", PAUSED),))
    old = worker(db, "host-old:1", 1_000)
    old.held(PAUSED, 120.5)
    old.finish(0.0)
    with db.engine.begin() as conn:
        aged = utcnow() - timedelta(days=8)
        conn.execute(sa.update(W).where(W.c.worker == "host-old:1").values(updated_at=aged))
    assert samples(db)[1][seconds] == 120.5

    seed_pairs(db.engine, 5)
    run_backfill(db.engine, db.settings, systems=[LegacySystemType.CASHOUT])

    workers = {w["worker"] for w in read_workers(db.engine, include_finished=True)}
    assert "host-old:1" not in workers  # forgotten
    assert samples(db)[1][seconds] >= 120.5
