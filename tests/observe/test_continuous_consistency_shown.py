"""The consistency both dashboards, ``/api/v1/status`` and the history show when the
latest report is a round of continuous verification (scope ``continuous``): the rate the
alerts judge, over the systems' rows, never the round's own rate of the few rows it read
(on SQLite and PostgreSQL).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from rich.console import Console

from support.check_data import populate, tables
from unistatus.api.service import create_app
from unistatus.backfill import run_backfill
from unistatus.clock import utcnow
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.check import run_check
from unistatus.migration.verify import CONTINUOUS_SCOPE, judged_report, verify_changes
from unistatus.observe.history import read_history
from unistatus.observe.metrics import SnapshotCollector, collect_snapshot, judged_consistency
from unistatus.observe.terminal_dashboard import frame

CASHOUT, ESCROW = LegacySystemType.CASHOUT, LegacySystemType.ESCROW
ROWS = 500


def _delete_unified(conn: sa.Connection, system: LegacySystemType, ids: range) -> None:
    conn.execute(
        sa.delete(U).where(U.c.legacy_system == system.value, U.c.legacy_id.in_(list(ids)))
    )


def _dashboard_text(db: Any) -> str:
    console = Console(width=140, record=True, color_system=None)
    console.print(frame(db.engine, db.settings))
    return " ".join(console.export_text().split())


def test_a_continuous_round_is_shown_as_the_judged_consistency_not_its_own_rate(
    db: Any,
) -> None:
    """A round read 13 changed cashouts, all missing their unified row: its own rate is
    0 of 13. Both dashboards and /api/v1/status said "consistency 0.000%" (the history's
    last point too) while /metrics and the alerts judged the systems' rows (exploratory
    review). Shown: the rate the alerts judge, every system's rows together."""
    populate(db.engine, db.settings, ROWS)  # rows stamped long ago
    run_backfill(db.engine, db.settings)  # complete: missing rows count from now on
    with db.engine.begin() as conn:  # 6 escrows the full check finds missing
        _delete_unified(conn, ESCROW, range(1, 7))
    full = run_check(db.engine, db.settings)
    assert full.total - full.consistent == 6

    lt = tables(db.engine, db.settings)[CASHOUT]
    changed = range(101, 114)  # 13 cashouts changed, their unified rows lost
    with db.engine.begin() as conn:
        _delete_unified(conn, CASHOUT, changed)
        conn.execute(
            sa.update(lt.table).where(lt.id.in_(list(changed))).values(updated_at=utcnow())
        )
    round_ = verify_changes(db.engine, db.settings, busy_max_wait=0)
    assert round_.scope == CONTINUOUS_SCOPE
    assert (round_.total, round_.consistent, round_.consistency_rate) == (13, 0, 0.0)
    assert round_.inconsistencies["missing_unified"] == 13
    stored = judged_report(db.engine)
    assert stored is not None and stored.id == round_.id

    # What the alerts judge: 487 + 494 + 500 consistent of the 1,500 rows.
    expected = (ROWS - 13 + ROWS - 6 + ROWS) / (3 * ROWS)
    snap = collect_snapshot(db.engine, db.settings)
    judged, awaiting = judged_consistency(snap)
    assert awaiting == 0 and judged == pytest.approx(expected)
    rates = {
        s.labels["system"]: s.value
        for m in SnapshotCollector(db.engine, db.settings).collect()
        if m.name == "unistatus_consistency_rate"
        for s in m.samples
    }
    assert rates[CASHOUT.value] == pytest.approx((ROWS - 13) / ROWS)

    assert snap.as_dict()["data_quality"]["consistency_rate"] == pytest.approx(expected)
    with TestClient(create_app(db.settings, db.engine)) as client:
        body = client.get("/api/v1/status").json()
    assert body["data_quality"]["consistency_rate"] == pytest.approx(expected)

    history = read_history(db.engine).as_dict()
    assert history["consistency"][-1]["rate"] == pytest.approx(expected)

    shown = _dashboard_text(db)
    figure = f"{expected * 100:.3f}%"
    assert re.search(rf"consistency {re.escape(figure)}", shown), shown  # Data quality
    assert "failing (13) 0/13 changed since" in shown, shown  # what the round read
    assert "0.000%" not in shown, shown  # nor the sparkline's last point


def test_a_round_no_full_check_can_judge_shows_no_made_up_rate(db: Any) -> None:
    """No full check and no completed backfill: a round of one bad cashout cannot say
    the system's rate (the alerts say so). The dashboards said 0.000% (0 of 1); the rate
    is unknown, never 0, and never "no check yet" either."""
    populate(db.engine, db.settings, ROWS)
    verify_changes(db.engine, db.settings, busy_max_wait=0)  # the first pass: every row
    with db.engine.begin() as conn:
        _delete_unified(conn, CASHOUT, range(3, 4))
        lt = tables(db.engine, db.settings)[CASHOUT]
        conn.execute(sa.update(lt.table).where(lt.id == 3).values(updated_at=utcnow()))
    round_ = verify_changes(db.engine, db.settings, busy_max_wait=0)
    assert (round_.total, round_.consistent) == (1, 0)

    snap = collect_snapshot(db.engine, db.settings)
    assert judged_consistency(snap)[0] is None
    assert snap.as_dict()["data_quality"]["consistency_rate"] is None
    assert all(c["rate"] != 0.0 for c in read_history(db.engine).as_dict()["consistency"])
    shown = _dashboard_text(db)
    assert "0.000%" not in shown, shown
    assert re.search(r"consistency unknown", shown), shown


@pytest.mark.parametrize("rounds", [0, 2], ids=["full-check", "continuous-rounds"])
def test_a_check_of_one_system_is_not_shown_as_the_whole_database(db: Any, rounds: int) -> None:
    """`check --system cashout` after a full check that found escrows drifted: the
    dashboards, /api/v1/status, the history and the alerts' overall figure showed
    cashouts' 100% as every system's, beside a firing alert for escrows (a probe; with
    rounds of continuous verification in between too: a review). The whole database's
    figure is the latest report of every system; each system's own is its latest."""
    populate(db.engine, db.settings, ROWS)
    run_backfill(db.engine, db.settings)
    with db.engine.begin() as conn:  # 10 escrows the full check finds missing
        _delete_unified(conn, ESCROW, range(1, 11))
    full = run_check(db.engine, db.settings)
    assert full.total == 3 * ROWS and full.total - full.consistent == 10
    lt = tables(db.engine, db.settings)[LegacySystemType.EXCHANGE]
    for _ in range(rounds):  # a first pass, then a round of two changed exchanges
        verify_changes(db.engine, db.settings, busy_max_wait=0)
        with db.engine.begin() as conn:
            conn.execute(sa.update(lt.table).where(lt.id.in_([3, 4])).values(updated_at=utcnow()))
    only = run_check(db.engine, db.settings, systems=[CASHOUT])
    assert (only.total, only.consistent) == (ROWS, ROWS)

    expected = (3 * ROWS - 10) / (3 * ROWS)
    snap = collect_snapshot(db.engine, db.settings)
    assert snap.consistency_rate == pytest.approx(expected)
    judged, _ = judged_consistency(snap)
    assert judged == pytest.approx(expected)
    with TestClient(create_app(db.settings, db.engine)) as client:
        body = client.get("/api/v1/status").json()
    assert body["data_quality"]["consistency_rate"] == pytest.approx(expected), body
    assert f"{expected * 100:.3f}%" in _dashboard_text(db)
    series = read_history(db.engine).as_dict()["consistency"]
    assert series[-1]["rate"] == pytest.approx(expected), series
    assert snap.systems is not None
    assert snap.systems["CASHOUT"]["consistency_rate"] == 1.0  # its own latest: 500/500
