"""The last hour as time series (operation stats, check reports, control log), on
SQLite and PostgreSQL: the library, the API endpoint and the terminal sparklines."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from rich.console import Console

from support.phases import to_phase
from support.stats_data import record_latency, seed_pairs
from unistatus.api.service import create_app
from unistatus.clock import utcnow
from unistatus.db.control import set_mode
from unistatus.db.tables_ops import BUCKET_COLUMNS, operation_stats
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration.check import run_check
from unistatus.observe.history import read_history
from unistatus.observe.stats import bucket_index
from unistatus.observe.terminal_dashboard import frame


def stats_row(engine: sa.Engine, at: datetime, n: int, ms: float, errors: int = 0) -> None:
    """One process's flushed interval ending at ``at``: ``n`` operations of ``ms`` each."""
    buckets = dict.fromkeys(BUCKET_COLUMNS, 0)
    buckets[BUCKET_COLUMNS[bucket_index(ms)]] = n
    with engine.begin() as conn:
        conn.execute(
            sa.insert(operation_stats).values(
                process_id="test",
                interval_start=at - timedelta(seconds=5),
                interval_end=at,
                operation="update_status",
                mode="DUAL_WRITE_LEGACY_PRIMARY",
                count=n,
                errors=errors,
                shadow_mismatches=0,
                latency_sum_ms=n * ms,
                latency_max_ms=ms,
                **buckets,
            )
        )


def test_operations_fall_into_their_minute(db: Any) -> None:
    now = utcnow()
    stats_row(db.engine, now - timedelta(hours=2), 99, 10.0)  # before the hour: left out
    stats_row(db.engine, now - timedelta(minutes=50, seconds=30), 10, 40.0)
    stats_row(db.engine, now - timedelta(minutes=10, seconds=30), 20, 280.0, errors=2)
    h = read_history(db.engine, now=now).as_dict()
    points = h["points"]
    assert len(points) == 60 and h["step_seconds"] == 60.0
    assert sum(p["count"] for p in points) == 30
    early, late = points[9], points[49]
    assert early["count"] == 10 and early["error_rate"] == 0.0
    assert 25.0 < early["p95_ms"] <= 40.0
    assert late["count"] == 20 and late["error_rate"] == 0.1
    assert 250.0 < late["p95_ms"] <= 280.0
    assert round(late["throughput_per_s"], 4) == round(20 / 60, 4)
    quiet = points[30]
    assert quiet["count"] == 0 and quiet["p95_ms"] is None and quiet["error_rate"] is None
    assert h["consistency"] == [] and h["events"] == []


def test_checks_and_mode_and_phase_changes_are_in_the_hour(db: Any) -> None:
    seed_pairs(db.engine, 200, drift=1)
    run_check(db.engine, db.settings)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    to_phase(db.engine, 1)
    h = read_history(db.engine).as_dict()
    assert [c["rate"] for c in h["consistency"]] == [0.995]
    assert [(e["key"], e["value"]) for e in h["events"]] == [
        ("mode", "DUAL_WRITE_LEGACY_PRIMARY"),
        ("phase", "1"),
    ]
    with TestClient(create_app(db.settings, db.engine)) as client:
        body = client.get("/api/v1/history").json()
        assert len(body["points"]) == 60
        assert [e["value"] for e in body["events"]] == ["DUAL_WRITE_LEGACY_PRIMARY", "1"]
        assert client.get("/api/v1/history", params={"seconds": 0}).status_code == 422
        assert len(client.get("/api/v1/history", params={"points": 12}).json()["points"]) == 12


def test_the_terminal_dashboard_draws_sparklines(db: Any) -> None:
    seed_pairs(db.engine, 100, drift=0)
    run_check(db.engine, db.settings)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    record_latency(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, 40.0, 30)
    console = Console(width=80, record=True, color_system=None)
    console.print(frame(db.engine, db.settings))
    out = console.export_text()
    assert "Last hour" in out
    all_lines = out.splitlines()
    top = next(i for i, line in enumerate(all_lines) if "Last hour" in line)
    rows = {line.split()[2]: line for line in all_lines[top + 1 : top + 5]}
    assert list(rows) == ["p95", "errors", "throughput", "consistency"], out
    for label, line in rows.items():
        assert any(ch in line for ch in "▁▂▃▄▅▆▇█"), (label, line)
    assert "^" in all_lines[top + 5] and "mode/phase" in all_lines[top + 5]  # set_mode
    assert all(len(line) <= 80 for line in out.splitlines())
