"""The last hour as time series (operation stats, check reports, control log), on
SQLite and PostgreSQL: the library, the API endpoint and the terminal sparklines."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from rich.console import Console

from conftest import IN_EVERY_LAYOUT
from support.host_clock import host_clock_ahead
from support.phases import to_phase
from support.stats_data import record_latency, seed_pairs
from unistatus.api.service import create_app
from unistatus.clock import utcnow
from unistatus.db.control import set_mode
from unistatus.db.tables_ops import BUCKET_COLUMNS, FINE_BUCKETS_MS, FINE_COLUMNS, operation_stats
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import InputError
from unistatus.migration.check import run_check
from unistatus.observe.history import read_history
from unistatus.observe.stats import bucket_index
from unistatus.observe.terminal_dashboard import frame


def stats_row(engine: sa.Engine, at: datetime, n: int, ms: float, errors: int = 0) -> None:
    """One process's flushed interval ending at ``at``: ``n`` operations of ``ms`` each."""
    interval(engine, at, n, ms, errors=errors, process="test", fine=False)


def interval(
    engine: sa.Engine,
    end: datetime,
    n: int,
    ms: float,
    *,
    errors: int = 0,
    process: str = "p1",
    operation: str = "update_status",
    fine: bool = True,
) -> None:
    """One flushed interval of 5 s ending at ``end``: ``n`` operations of ``ms`` each;
    ``fine=False``: stored without the fine buckets (by code older than revision 0019)."""
    buckets = dict.fromkeys((*BUCKET_COLUMNS, *FINE_COLUMNS), 0)
    buckets[BUCKET_COLUMNS[bucket_index(ms)]] = n
    if fine:
        buckets[FINE_COLUMNS[bucket_index(ms, FINE_BUCKETS_MS)]] = n
    with engine.begin() as conn:
        conn.execute(
            sa.insert(operation_stats).values(
                process_id=process,
                interval_start=end - timedelta(seconds=5),
                interval_end=end,
                operation=operation,
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


def test_a_dashboard_host_behind_the_database_shows_the_last_changes(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hour ended at the dashboard host's time: five minutes behind, a switch made
    just now was in its future, and not shown (a probe)."""
    if db.backend == "sqlite":
        pytest.skip("SQLite's clock is this host's own: no host can be off it")
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    record_latency(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, 5.0, 10)
    host_clock_ahead(monkeypatch, timedelta(minutes=-5))
    h = read_history(db.engine).as_dict()
    assert [(e["key"], e["value"]) for e in h["events"]] == [("mode", "DUAL_WRITE_LEGACY_PRIMARY")]
    assert sum(p["count"] for p in h["points"]) == 10


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


def flushed(
    engine: sa.Engine,
    after: float,
    n: int,
    ms: float,
    *,
    errors: int = 0,
    process: str = "p1",
    operation: str = "update_status",
    fine: bool = True,
) -> None:
    """One flushed interval ending ``after`` seconds after :data:`SINCE` (:func:`interval`)."""
    end = SINCE + timedelta(seconds=after)
    interval(engine, end, n, ms, errors=errors, process=process, operation=operation, fine=fine)


UNTIL = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SINCE = UNTIL - timedelta(seconds=600)


def seed_ten_minutes(engine: sa.Engine) -> None:
    """Rows on the edges of the window and of its minutes, two processes in one
    minute, and a minute whose rows do not all have the fine buckets."""
    flushed(engine, 0, 7, 3.0)  # ends when the window starts: not in it
    flushed(engine, 0.000001, 3, 4.0)
    flushed(engine, 59.999999, 2, 12.0, errors=1, process="p2")
    flushed(engine, 60, 5, 40.0)  # on the edge: the later minute's
    flushed(engine, 200, 10, 90.0)
    flushed(engine, 201, 30, 8.0, process="p2")
    flushed(engine, 330, 4, 260.0)
    flushed(engine, 335, 4, 260.0, process="p2", fine=False)  # the coarse p95
    flushed(engine, 600, 6, 700.0, errors=6)  # ends when the window does: in it
    flushed(engine, 600.000001, 9, 3.0)  # after the window


# (count, p95_ms, error_rate, throughput_per_s) of each step of seed_ten_minutes.
EXPECTED_MINUTES = [
    (5, 11.75, 0.2, 0.0833),
    (5, 39.75, 0.0, 0.0833),
    (0, None, None, 0.0),
    (40, 89.0, 0.0, 0.6667),
    (0, None, None, 0.0),
    (8, 257.0, 0.0, 0.1333),  # coarse: one process's row has no fine buckets
    (0, None, None, 0.0),
    (0, None, None, 0.0),
    (0, None, None, 0.0),
    (6, 695.0, 1.0, 0.1),
]
EXPECTED_SEVENTHS = [
    (10, 39.5, 0.1, 0.1167),
    (0, None, None, 0.0),
    (40, 89.0, 0.0, 0.4667),
    (8, 257.0, 0.0, 0.0933),
    (0, None, None, 0.0),
    (0, None, None, 0.0),
    (6, 695.0, 1.0, 0.07),
]


def figures(points: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(p["count"], p["p95_ms"], p["error_rate"], p["throughput_per_s"]) for p in points]


@IN_EVERY_LAYOUT
def test_each_step_sums_its_rows_exactly(db: Any) -> None:
    """Exact figures of a small fixture (what the history said when it read every row
    into Python): the step of a row on an edge, the clamped last step, the coarse
    buckets where a step's rows do not all have the fine ones."""
    seed_ten_minutes(db.engine)
    h = read_history(db.engine, seconds=600, points=10, now=UNTIL).as_dict()
    assert (h["since"], h["until"], h["step_seconds"]) == (
        SINCE.isoformat(),
        UNTIL.isoformat(),
        60.0,
    )
    assert [p["t"] for p in h["points"]] == [
        (SINCE + timedelta(minutes=i + 1)).isoformat() for i in range(10)
    ]
    assert figures(h["points"]) == EXPECTED_MINUTES
    odd = read_history(db.engine, seconds=600, points=7, now=UNTIL).as_dict()
    assert odd["step_seconds"] == 600 / 7
    assert figures(odd["points"]) == EXPECTED_SEVENTHS


@contextmanager
def rows_read_from(engine: sa.Engine, table: sa.Table) -> Iterator[list[int]]:
    """The number of rows each SELECT from ``table`` made inside the block returns
    (each run again, as it was sent, once the block is done; not catalog reads)."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and table.name in statement:
            sent.append((statement, parameters))

    counts: list[int] = []
    sa.event.listen(engine, "after_cursor_execute", record)
    try:
        yield counts
    finally:
        sa.event.remove(engine, "after_cursor_execute", record)
    with engine.connect() as conn:
        counts.extend(len(conn.exec_driver_sql(q, p).all()) for q, p in sent)


@IN_EVERY_LAYOUT
def test_the_database_sums_the_steps(db: Any) -> None:
    """Six hours of 4 processes' flushes read as 720 steps of a day made the service
    hold every row in memory; the rows returned are now bounded by the steps."""
    for i in range(240):  # 4 processes flushing every 5 s for 5 minutes
        flushed(db.engine, 300 + (i // 4) * 5, 1, 4.0, process=f"p{i % 4}")
    with rows_read_from(db.engine, operation_stats) as counts:
        h = read_history(db.engine, seconds=600, points=10, now=UNTIL).as_dict()
    assert sum(p["count"] for p in h["points"]) == 240
    assert counts and max(counts) <= 10 + 1, counts  # a row per step (and the window's end)


def test_a_span_shorter_than_a_second_per_step_is_refused(db: Any) -> None:
    """A step under a second is noise, and one that underflows to 0 divided by zero."""
    with TestClient(create_app(db.settings, db.engine), raise_server_exceptions=False) as client:
        for seconds, points in [("5e-324", 60), ("1e-300", 60), ("59.9", 60), ("1", 2)]:
            r = client.get("/api/v1/history", params={"seconds": seconds, "points": points})
            assert r.status_code == 422, (seconds, r.status_code, r.text)
            assert "at least 1 s per step" in r.json()["detail"], r.text
        r = client.get("/api/v1/history", params={"seconds": 60, "points": 60})
        assert r.status_code == 200 and r.json()["step_seconds"] == 1.0
        schema = client.get("/openapi.json").json()["paths"]["/api/v1/history"]["get"]
        assert "at least 1 s per step" in schema["description"]
    for seconds in (5e-324, 59.0, float("nan")):
        with pytest.raises(InputError, match="at least 1 s per step"):
            read_history(db.engine, seconds=seconds, points=60)


def test_the_history_counts_the_writes_as_status_does(db: Any) -> None:
    """Reads are open to anyone: a flood of fast ones must not flatten the p95, the
    error rate or the throughput of the writes the gates and alerts judge."""
    flushed(db.engine, 100, 10, 280.0, errors=5)
    flushed(db.engine, 101, 10, 280.0, operation="create_transaction", process="p2")
    flushed(db.engine, 102, 5000, 1.0, operation="get_transaction_status", process="p3")
    step = read_history(db.engine, seconds=600, points=10, now=UNTIL).points[1]
    assert step["count"] == 20 and step["error_rate"] == 0.25, step
    assert step["p95_ms"] is not None and step["p95_ms"] > 250, step
    with TestClient(create_app(db.settings, db.engine)) as client:
        schema = client.get("/openapi.json").json()["paths"]["/api/v1/history"]["get"]
        assert "writes" in schema["description"], schema["description"]
        page = client.get("/").text
    heading = page[page.index('<h2 id="history-title">') :].split("</h2>")[0]
    assert "writes" in heading, heading
