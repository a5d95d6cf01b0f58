"""Verification that keeps up: a mismatch of a write in flight is re-checked, not
reported; continuous verification (watermark, bounded rounds, lag on /metrics); the
gate refuses a full check older than a system's last mode change.

The race is on PostgreSQL: a writer holds the entity (its legacy row FOR UPDATE) with
the fix uncommitted; the check is released by the writer's commit once ``pg_locks``
shows it waiting. The rest runs on both backends.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from support.check_data import populate, tables
from support.host_clock import host_clock_ahead
from support.roles import ALL_ON_PUBLIC, a_role_without_read_all_stats
from support.sessions import until_no_other_at_work
from unistatus.clock import utcnow
from unistatus.db.control import write_value
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.db.mode_reads import last_mode_change_at
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_check import check_reports, check_runs
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import LegacySystemType, UnifiedTransactionStatus
from unistatus.migration.check import CheckReport, latest_report, run_check
from unistatus.migration.check_runs import CONTINUOUS
from unistatus.migration.gates import gate_check
from unistatus.migration.verify import (
    CONTINUOUS_SCOPE,
    SLACK,
    judged_report,
    verification_status,
    verify_changes,
)
from unistatus.observe.alert_rules import observe
from unistatus.observe.alerts import Monitor
from unistatus.observe.metrics import SnapshotCollector, collect_snapshot

CASHOUT = LegacySystemType.CASHOUT
mapper = LegacyStatusMapper()


def _wrong_status(db: Any, legacy_id: int) -> str:
    lt = tables(db.engine, db.settings)[CASHOUT]
    with db.engine.connect() as conn:
        status = conn.execute(sa.select(lt.status).where(lt.id == legacy_id)).scalar_one()
    return next(
        s.value for s in UnifiedTransactionStatus if not mapper.is_compatible(CASHOUT, status, s)
    )


def _set_unified(conn: sa.Connection, legacy_id: int, **values: Any) -> None:
    conn.execute(
        sa.update(U)
        .where(U.c.legacy_system == CASHOUT.value, U.c.legacy_id == legacy_id)
        .values(**values)
    )


def _someone_waits_for_a_lock(db: Any) -> bool:
    with db.engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE NOT l.granted AND a.datname = current_database()"
                )
            ).scalar_one()
        )


@pytest.mark.parametrize(
    "writer_fixes_it, checker_ahead",
    [(True, 0), (False, 0), (True, 6)],
    ids=["fixed", "not_fixed", "fixed_seen_by_a_host_6_min_ahead"],
)
def test_a_mismatch_seen_while_a_write_is_in_flight_is_rechecked(
    pg: Any, writer_fixes_it: bool, checker_ahead: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host ahead judged the write in flight older than the window on its own clock:
    it was not re-checked and reported (a probe); the window is the database's."""
    populate(pg.engine, pg.settings, 30)
    lt = tables(pg.engine, pg.settings)[CASHOUT]
    with pg.engine.connect() as conn:
        right = conn.execute(
            sa.select(U.c.status).where(U.c.legacy_system == "CASHOUT", U.c.legacy_id == 7)
        ).scalar_one()
    with pg.engine.begin() as conn:  # committed: half of a write (its unified side stale)
        _set_unified(conn, 7, status=_wrong_status(pg, 7), updated_at=utcnow())
    writer = pg.engine.connect()
    writer.begin()
    writer.execute(sa.select(lt.id).where(lt.id == 7).with_for_update())  # the entity lock
    _set_unified(writer, 7, status=right if writer_fixes_it else _wrong_status(pg, 7))
    result: list[CheckReport] = []
    host_clock_ahead(monkeypatch, timedelta(minutes=checker_ahead))
    checker = threading.Thread(
        target=lambda: result.append(run_check(pg.engine, pg.settings, systems="cashout"))
    )
    checker.start()
    try:
        deadline = time.monotonic() + 30
        while not _someone_waits_for_a_lock(pg):  # the re-check waits for the writer
            assert time.monotonic() < deadline, "the check never waited for the writer"
            assert checker.is_alive(), "the check finished without waiting for the writer"
            time.sleep(0.02)
        writer.commit()
    finally:
        writer.close()
        checker.join(timeout=60)
        monkeypatch.undo()
    report = result[0]
    assert report.total == 30
    if writer_fixes_it:
        assert report.is_consistent, report.examples  # no false alarm
    else:
        assert report.inconsistencies["status_mismatch"] == 1
        assert [e["legacy_id"] for e in report.examples] == [7]


def test_continuous_verification_verifies_what_changed_in_bounded_rounds(db: Any) -> None:
    populate(db.engine, db.settings, 50)  # rows stamped long ago
    full = run_check(db.engine, db.settings)
    assert full.is_consistent
    assert verification_status(db.engine)["watermark"] is None
    # Nothing changed since `full` (no time bound: the pace of a loaded machine aside).
    first = verify_changes(db.engine, db.settings, chunk=10, max_seconds=None)
    assert first.complete and first.total == 0
    assert latest_report(db.engine).id == full.id  # 0 of 0 is not stored as 100%
    status = verification_status(db.engine)
    assert status["watermark"] is not None and status["lag_seconds"] < 60

    lt = tables(db.engine, db.settings)[CASHOUT]
    with db.engine.begin() as conn:
        _set_unified(conn, 3, status=_wrong_status(db, 3), updated_at=utcnow())
        for legacy_id in (21, 44):
            conn.execute(sa.update(lt.table).where(lt.id == legacy_id).values(updated_at=utcnow()))
    rounds = []
    while not rounds or not rounds[-1].complete:
        rounds.append(verify_changes(db.engine, db.settings, chunk=10, max_rows=1))
        assert len(rounds) < 10
    assert len(rounds) >= 3  # bounded: one changed row per round here
    assert sum(r.total for r in rounds) == 3  # each changed row verified once
    assert sum(r.inconsistencies["status_mismatch"] for r in rounds) == 1
    latest = latest_report(db.engine)
    assert latest is not None and latest.scope == CONTINUOUS_SCOPE
    # Gates read complete full checks: continuous rounds never stand in for one.
    assert latest_report(db.engine, scope="all", complete=True).id == full.id

    Monitor(db.engine, db.settings).evaluate()  # monitor and serve run a round each time
    metrics = {m.name: m for m in SnapshotCollector(db.engine, db.settings).collect()}
    lag = metrics["unistatus_verification_lag_seconds"]
    assert {s.labels["system"] for s in lag.samples} == {s.value for s in LegacySystemType}
    assert all(0 <= s.value < 120 for s in lag.samples)


def test_the_gate_refuses_a_full_check_older_than_a_systems_last_mode_change(db: Any) -> None:
    populate(db.engine, db.settings, 20)
    run_check(db.engine, db.settings)

    def gate() -> Any:
        return gate_check(
            db.engine, "full", after=None, covering_since=None, require_full=True, need_rows=False
        )

    assert gate().passed
    with db.engine.begin() as conn:  # a per-system switch (issue 14 §1's key)
        write_value(conn, "mode.ESCROW", "DUAL_WRITE_LEGACY_PRIMARY", actor="t", reason="t")
    with db.engine.connect() as conn:
        assert last_mode_change_at(conn, LegacySystemType.ESCROW) is not None
        assert last_mode_change_at(conn, CASHOUT) is None
    refused = gate()
    assert not refused.passed and "ESCROW before its last mode change" in str(refused.detail)
    with db.engine.begin() as conn:  # the global key counts for every system
        write_value(conn, "mode", "DUAL_WRITE_LEGACY_PRIMARY", actor="t", reason="t")
    with db.engine.connect() as conn:
        assert last_mode_change_at(conn, CASHOUT) is not None
    run_check(db.engine, db.settings)
    assert gate().passed


def test_a_round_is_bounded_in_time_and_the_pass_goes_on_in_the_next(db: Any) -> None:
    """A pass reads every key range (no index on updated_at): on a big table a round
    stops once its time per system is up, after the range it began, and the next round
    goes on from the stored position. Every system progresses each round; nothing is
    verified twice or skipped."""
    populate(db.engine, db.settings, 20)  # keys 1..20 per system
    run_check(db.engine, db.settings)
    lt = tables(db.engine, db.settings)[CASHOUT]
    with db.engine.begin() as conn:  # changed rows in every range of the cashouts
        conn.execute(sa.update(lt.table).values(updated_at=utcnow()))
    rounds = []
    while not rounds or not rounds[-1].complete:
        rounds.append(verify_changes(db.engine, db.settings, chunk=6, max_seconds=1e-6))
        assert len(rounds) <= 10
    per_system = [r.per_system[CASHOUT.value]["total"] for r in rounds]
    assert per_system == [6, 6, 6, 2]  # one range (6 keys) a round
    # The other systems walk their (unchanged) ranges in the same rounds, not after.
    escrow = [r.per_system[LegacySystemType.ESCROW.value]["complete"] for r in rounds]
    assert escrow == [False, False, False, True]
    assert sum(r.total for r in rounds) == 20  # the cashouts changed, each once
    assert verification_status(db.engine)["watermark"] is not None
    # Unbounded (None), one round reads the whole pass.
    with db.engine.begin() as conn:
        conn.execute(sa.update(lt.table).values(updated_at=utcnow()))
    whole = verify_changes(db.engine, db.settings, chunk=6, max_seconds=None)
    assert whole.complete and whole.per_system[CASHOUT.value]["total"] == 20


def test_a_mismatch_in_a_time_bounded_round_is_judged_for_its_own_system(db: Any) -> None:
    """A round stopped by its time bound is stored as incomplete (not every system
    finished its pass). Its per-system figures still count for the system they are of:
    the alerts judge that system by them, so the automated response rolls back that
    system only (an incomplete report judged only as a whole named no system, and the
    response then rolled back every system)."""
    populate(db.engine, db.settings, 20)
    run_check(db.engine, db.settings)
    with db.engine.begin() as conn:
        _set_unified(conn, 3, status=_wrong_status(db, 3), updated_at=utcnow())
    bounded = verify_changes(db.engine, db.settings, chunk=6, max_seconds=1e-6)
    assert not bounded.complete
    assert bounded.per_system[CASHOUT.value]["inconsistencies"]["status_mismatch"] == 1

    judged = judged_report(db.engine, CASHOUT)
    assert judged is not None and judged.id == bounded.id
    other = judged_report(db.engine, LegacySystemType.ESCROW)
    assert (
        other is not None
        and other.per_system["ESCROW"]["consistent"] == other.per_system["ESCROW"]["total"]
    )
    snap = collect_snapshot(db.engine, db.settings)
    firing = [o for o in observe(snap, now=utcnow()) if o.name == "consistency_critical"]
    assert firing and firing[0].firing
    assert set(firing[0].details.get("systems") or ()) == {"CASHOUT"}  # cashouts only


def test_a_round_of_a_few_changed_rows_is_judged_against_the_systems_rows(db: Any) -> None:
    """A round of continuous verification reads the rows changed since its watermark
    only. One mismatch among them is one row of the system, not the system's rate: 1 of
    500 cashouts is 99.8% consistent (a warning), never the 0% that fired the critical
    alert and rolled the system back (an exploratory review: 1 bad escrow of 10,000
    rolled escrows back to LEGACY_ONLY)."""
    populate(db.engine, db.settings, 500)
    run_check(db.engine, db.settings)
    states = _one_bad_row_in_a_round(db)
    assert states["consistency_warning"].firing
    assert set(states["consistency_warning"].details.get("systems") or ()) == {"CASHOUT"}


def test_without_a_full_check_a_round_does_not_judge_the_system(db: Any) -> None:
    """Phase 1 asks for no full check, only `check --since phase-start`: with none ever
    run (and no completed backfill), a round that read one bad row of 500 cashouts was
    judged 0% and the monitor rolled cashouts back (exploratory review, an unmappable
    bypass write). Without the system's rows to judge it against, a round of the rows
    changed since a time does not say the system's rate: unknown, never a rollback."""
    populate(db.engine, db.settings, 500)
    verify_changes(db.engine, db.settings, busy_max_wait=0)  # the first pass: every row
    snap = _a_round_reading_one_bad_row(db)
    cashouts = (snap.systems or {})[CASHOUT.value]
    assert cashouts["alert_consistency_rate"] is None
    states = {o.name: o for o in observe(snap, now=utcnow())}
    assert not states["consistency_critical"].firing
    assert "full check" in states["consistency_critical"].message


def _a_round_reading_one_bad_row(db: Any) -> Any:
    """Cashout 3 made inconsistent, then a round that reads it alone; the snapshot."""
    with db.engine.begin() as conn:
        _set_unified(conn, 3, status=_wrong_status(db, 3), updated_at=utcnow())
    round_ = verify_changes(db.engine, db.settings, busy_max_wait=0)
    figures = round_.per_system[CASHOUT.value]
    assert (figures["total"], figures["consistent"]) == (1, 0)
    return collect_snapshot(db.engine, db.settings)


def _one_bad_row_in_a_round(db: Any) -> dict[str, Any]:
    """A round reading one bad row, judged 1 bad row of the 500 (never the round's 0 of
    1); the rules' observations."""
    snap = _a_round_reading_one_bad_row(db)
    cashouts = (snap.systems or {})[CASHOUT.value]
    assert cashouts["alert_consistency_rate"] == pytest.approx(499 / 500)
    assert cashouts["alert_inconsistent_rows"] == 1
    states = {o.name: o for o in observe(snap, now=utcnow())}
    assert not states["consistency_critical"].firing
    return states


def test_rows_the_full_check_found_bad_stay_bad_when_a_round_is_judged(db: Any) -> None:
    """A round judged against the system's rows takes the rows it did not read as the
    full check left them: its 50 inconsistent cashouts stay inconsistent. They were
    counted consistent: one new mismatch in a round made a system 10% inconsistent read
    99.8% and cleared the critical alert (review)."""
    populate(db.engine, db.settings, 500)
    old = utcnow() - timedelta(days=1)
    with db.engine.begin() as conn:
        for i in range(10, 60):
            _set_unified(conn, i, status=_wrong_status(db, i), updated_at=old)
    run_check(db.engine, db.settings)
    verify_changes(db.engine, db.settings, busy_max_wait=0)
    with db.engine.begin() as conn:
        _set_unified(conn, 3, status=_wrong_status(db, 3), updated_at=utcnow())
    verify_changes(db.engine, db.settings, busy_max_wait=0)
    cashouts = (collect_snapshot(db.engine, db.settings).systems or {})[CASHOUT.value]
    assert cashouts["alert_consistency_rate"] <= 449 / 500
    assert cashouts["alert_inconsistent_rows"] >= 51
    states = {o.name: o for o in observe(collect_snapshot(db.engine, db.settings), now=utcnow())}
    assert states["consistency_critical"].firing


def test_continuous_verification_leaves_the_other_cores_to_live_traffic(pg: Any) -> None:
    """A round of continuous verification runs beside live traffic (monitor, serve): its
    statements get no parallel workers (on 2 cores a round's join took both, and the
    live p95 doubled); a check an operator runs keeps them."""
    populate(pg.engine, pg.settings, 50)
    workers: list[str] = []

    def watch(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "unified_transactions" in statement and "GROUP BY" in statement:
            workers.append(conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar())

    sa.event.listen(pg.engine, "before_cursor_execute", watch)
    try:
        # No time bound: this is about its workers, not its pace (a loaded machine).
        round_ = verify_changes(pg.engine, pg.settings, chunk=10, max_seconds=None)
        assert round_.total == 150  # 50 a system
        continuous, workers[:] = list(workers), []
        run_check(pg.engine, pg.settings, store=False)
        checked = list(workers)
    finally:
        sa.event.remove(pg.engine, "before_cursor_execute", watch)
    assert continuous and set(continuous) == {"0"}
    with pg.engine.connect() as conn:
        default = conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar()
    assert checked and set(checked) == {default} != {"0"}


def _at_work(engine: sa.Engine) -> sa.Connection:
    """A session of ``engine`` idle in a transaction: at work, for pg_stat_activity."""
    conn = engine.connect()
    conn.begin()
    conn.exec_driver_sql("SELECT 1")
    return conn


def test_a_new_pass_waits_beside_live_traffic_and_a_pass_begun_goes_on(pg: Any) -> None:
    """Beside other applications at work, a new pass begins only ``busy_pace`` times the
    last pass's length after the last began (``busy_max_wait`` at most): on 2 cores a
    pass each evaluation took the core live writes wait for. The deferred system verifies
    nothing (no report stored, the watermark kept); a pass begun goes on; once the
    traffic is gone, or the wait is up, passes begin again."""
    populate(pg.engine, pg.settings, 30)
    run_check(pg.engine, pg.settings)
    first = verify_changes(pg.engine, pg.settings, max_seconds=None, busy_pace=1e6)
    assert first.complete and "deferred" not in first.per_system[CASHOUT.value]
    mark = verification_status(pg.engine)["systems"][CASHOUT.value]["watermark"]
    with pg.engine.begin() as conn:
        _set_unified(conn, 3, status=_wrong_status(pg, 3), updated_at=utcnow())
    stored = latest_report(pg.engine)
    shop = create_engine(pg.url, application_name="shop")
    app = _at_work(shop)
    try:
        waited = verify_changes(pg.engine, pg.settings, max_seconds=None, busy_pace=1e6)
        assert waited.per_system[CASHOUT.value]["deferred"] == "live_traffic"
        assert waited.total == 0 and not waited.complete  # not verified up to now
        assert latest_report(pg.engine).id == stored.id  # nothing verified, nothing stored
        assert verification_status(pg.engine)["systems"][CASHOUT.value]["watermark"] == mark

        # The wait is bounded: busy_max_wait after the last pass began, it begins.
        time.sleep(0.3)
        due = verify_changes(
            pg.engine, pg.settings, max_seconds=None, busy_pace=1e6, busy_max_wait=0.2
        )
        assert "deferred" not in due.per_system[CASHOUT.value]
        assert due.inconsistencies["status_mismatch"] == 1

        # A pass begun (bounded to one range here, with waiting off) goes on beside it.
        with pg.engine.begin() as conn:
            _set_unified(conn, 25, updated_at=utcnow())
        begun = verify_changes(pg.engine, pg.settings, chunk=10, max_seconds=1e-6, busy_max_wait=0)
        assert not begun.complete
        # (Beside traffic, in ranges of chunk / BUSY_NARROWER keys: 11-30 here.)
        going_on = verify_changes(pg.engine, pg.settings, chunk=200, busy_pace=1e6)
        assert "deferred" not in going_on.per_system[CASHOUT.value]
        assert going_on.per_system[CASHOUT.value]["total"] >= 1  # key 25, in a later range
    finally:
        app.close()
        shop.dispose()
    time.sleep(1.1)  # the application gone for over a second: quiet again
    quiet = verify_changes(pg.engine, pg.settings, max_seconds=None, busy_pace=1e6)
    assert all("deferred" not in figures for figures in quiet.per_system.values())


def test_beside_live_traffic_a_pass_in_progress_reads_one_narrow_range_a_round(pg: Any) -> None:
    """A pass begun while the database was quiet went on beside the traffic that came
    after at full width: ranges of ``chunk`` keys for up to ``max_seconds`` per system
    each round (a 1M-row pass begun as the load test started read 3 x 87k rows in 3.4 s
    of its second round, live throughput halved meanwhile). Beside live traffic it now
    goes on by one range of ``chunk / BUSY_NARROWER`` keys a round while it is younger
    than ``busy_max_wait``: it still ends, spread over more rounds."""
    populate(pg.engine, pg.settings, 30)
    run_check(pg.engine, pg.settings)
    with pg.engine.begin() as conn:  # every cashout changed since the check
        conn.execute(
            sa.update(U).where(U.c.legacy_system == CASHOUT.value).values(updated_at=utcnow())
        )
    begun = verify_changes(pg.engine, pg.settings, chunk=10, max_seconds=1e-6, busy_max_wait=0)
    assert not begun.complete and begun.per_system[CASHOUT.value]["total"] == 10
    shop = create_engine(pg.url, application_name="shop")
    app = _at_work(shop)
    try:
        rounds = []
        for _ in range(20):
            round_ = verify_changes(pg.engine, pg.settings, chunk=20, max_seconds=None)
            rounds.append(round_.per_system[CASHOUT.value])
            if round_.per_system[CASHOUT.value]["complete"]:
                break
    finally:
        app.close()
        shop.dispose()
    # Keys 11-30, two a round (20 / BUSY_NARROWER), then the open range past the last.
    assert [r["total"] for r in rounds] == [2] * 10 + [0]
    assert [r["complete"] for r in rounds] == [False] * 10 + [True]

    # A pass older than busy_max_wait goes on as when quiet: the watermark's lag stays
    # bounded beside traffic that never stops.
    with pg.engine.begin() as conn:
        conn.execute(
            sa.update(U).where(U.c.legacy_system == CASHOUT.value).values(updated_at=utcnow())
        )
    verify_changes(pg.engine, pg.settings, chunk=10, max_seconds=1e-6, busy_max_wait=0)
    time.sleep(0.4)
    shop = create_engine(pg.url, application_name="shop")
    app = _at_work(shop)
    try:
        old = verify_changes(pg.engine, pg.settings, chunk=20, max_seconds=None, busy_max_wait=0.3)
    finally:
        app.close()
        shop.dispose()
    assert (
        old.per_system[CASHOUT.value]["total"] == 20 and old.per_system[CASHOUT.value]["complete"]
    )


def test_quiet_or_unable_to_tell_a_pass_begins_each_round(db: Any) -> None:
    """Without live traffic (or on SQLite, which cannot tell) every round begins a pass."""
    populate(db.engine, db.settings, 10)
    for _ in range(2):
        round_ = verify_changes(db.engine, db.settings, max_seconds=None, busy_pace=1e6)
        assert all("deferred" not in figures for figures in round_.per_system.values())


def test_serves_own_api_sessions_at_work_are_live_traffic_for_its_verification(pg: Any) -> None:
    """`serve` verifies on the engine its API writes through: those siblings count while
    at work (the backfill leaves its siblings out); its own connections just returned
    to the pool do not."""
    ops = ops_for(pg.engine)
    serve = create_engine(pg.url, application_name="unistatus serve")
    pg.engine.dispose()
    try:
        with serve.connect() as probe:  # itself, and a sibling back in the pool
            until_no_other_at_work(ops, probe)
            with serve.connect() as used:
                used.exec_driver_sql("SELECT 1")
            assert ops.live_sessions(probe, siblings=True) == 0
        request = _at_work(serve)
        try:
            with serve.connect() as probe:
                assert ops.live_sessions(probe, siblings=True) == 1
                assert ops.live_sessions(probe) == 0  # the backfill's reading
        finally:
            request.close()
    finally:
        serve.dispose()


def _last_pass(db: Any, system: LegacySystemType, began_ago: float, took: float) -> None:
    """Make ``system``'s last pass one that began ``began_ago`` seconds ago and took
    ``took`` seconds (its watermark and the time of its last range)."""
    began = utcnow() - timedelta(seconds=began_ago)
    with db.engine.begin() as conn:
        conn.execute(
            sa.update(check_runs)
            .where(check_runs.c.run == CONTINUOUS, check_runs.c.system == system.value)
            .values(watermark=began, updated_at=began + timedelta(seconds=took))
        )


def test_beside_traffic_the_next_pass_begins_pace_times_the_last_ones_length_after_it(
    pg: Any,
) -> None:
    """The wait beside live traffic is the last pass's length times the pace (at most
    busy_max_wait), counted from when that pass began; a host whose clock is behind the
    one that began it does not wait longer for it."""
    populate(pg.engine, pg.settings, 10)
    verify_changes(pg.engine, pg.settings, max_seconds=None)  # the positions exist
    shop = create_engine(pg.url, application_name="shop")
    app = _at_work(shop)
    try:

        def deferred(began_ago: float, took: float, pace: float, max_wait: float) -> bool:
            for system in LegacySystemType:
                _last_pass(pg, system, began_ago, took)
            got = verify_changes(
                pg.engine, pg.settings, busy_pace=pace, busy_max_wait=max_wait, max_seconds=None
            )
            return got.per_system[CASHOUT.value].get("deferred") == "live_traffic"

        assert deferred(10.0, 2.0, 10.0, 120.0)  # 2 s x 10 = 20 s: 10 s is too soon
        assert not deferred(10.0, 2.0, 4.0, 120.0)  # 2 s x 4 = 8 s: due
        assert not deferred(10.0, 2.0, 10.0, 9.0)  # at most 9 s: due
        assert not deferred(-30.0, 2.0, 10.0, 120.0)  # began "in the future": due now
    finally:
        app.close()
        shop.dispose()


def test_a_system_that_waits_keeps_what_its_last_pass_found(pg: Any) -> None:
    """A round where the cashouts wait beside live traffic and the escrows verify: the
    cashouts' figures in it are their last pass's, the mismatch that pass found
    included, so the alerts keep judging them by it (stored at 0 of 0, they read as
    100% consistent and the critical alert cleared until the next pass). The round's
    totals are the escrows' alone, and it is stored incomplete (no gate takes it)."""
    populate(pg.engine, pg.settings, 20)
    run_check(pg.engine, pg.settings)
    with pg.engine.begin() as conn:
        _set_unified(conn, 3, status=_wrong_status(pg, 3), updated_at=utcnow())
    found = verify_changes(pg.engine, pg.settings, max_seconds=None)
    assert found.per_system[CASHOUT.value]["inconsistencies"]["status_mismatch"] == 1
    escrows = tables(pg.engine, pg.settings)[LegacySystemType.ESCROW]
    with pg.engine.begin() as conn:  # an escrow changed since
        conn.execute(sa.update(escrows.table).where(escrows.id == 5).values(updated_at=utcnow()))
    _last_pass(pg, CASHOUT, 1.0, 1.0)  # the cashouts' pass is recent: they wait
    _last_pass(pg, LegacySystemType.ESCROW, 600.0, 1.0)  # the escrows' is due
    shop = create_engine(pg.url, application_name="shop")
    app = _at_work(shop)
    try:
        mixed = verify_changes(pg.engine, pg.settings, max_seconds=None)
    finally:
        app.close()
        shop.dispose()
    cashouts = mixed.per_system[CASHOUT.value]
    assert cashouts["deferred"] == "live_traffic"
    assert cashouts["inconsistencies"]["status_mismatch"] == 1
    assert cashouts["total"] == found.per_system[CASHOUT.value]["total"]
    escrow_rows = mixed.per_system[LegacySystemType.ESCROW.value]["total"]
    assert escrow_rows >= 1 and mixed.total == escrow_rows  # the round's own rows only
    stored = latest_report(pg.engine)
    assert stored is not None and stored.id == mixed.id and not stored.complete
    judged = judged_report(pg.engine, CASHOUT)
    assert judged is not None and judged.id == mixed.id
    snap = collect_snapshot(pg.engine, pg.settings)
    firing = [o for o in observe(snap, now=utcnow()) if o.name == "consistency_critical"]
    assert firing and firing[0].firing and "CASHOUT" in set(firing[0].details["systems"])


def test_a_monitor_whose_role_sees_activity_in_part_says_so_once(
    pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Its verification's wait beside live traffic sees other roles' sessions only in a
    transaction without pg_read_all_stats: said once, at the first round."""
    populate(pg.engine, pg.settings, 5)
    with a_role_without_read_all_stats(pg, ALL_ON_PUBLIC) as url:
        engine = create_engine(url, application_name="unistatus/monitor")
        try:
            monitor = Monitor(engine, pg.settings)
            with caplog.at_level(logging.WARNING, logger="unistatus.observe.alerts"):
                monitor.verify()
                monitor.verify()
        finally:
            engine.dispose()
    said = [r.getMessage() for r in caplog.records if "pg_read_all_stats" in r.getMessage()]
    assert len(said) == 1 and "continuous verification's wait" in said[0]
    assert not [r for r in caplog.records if "verification failed" in r.getMessage()]


def test_continuous_verification_counts_a_transaction_acknowledged_without_its_legacy_row(
    db: Any,
) -> None:
    """A create whose legacy INSERT the database refused (``primary_wins``) is counted
    ``missing_legacy`` by the round that verifies what changed, as ``check`` counts it,
    and the alerts see it; once the rollback created the row, a round finds nothing."""
    from support.missing_legacy import refused_creates
    from unistatus.migration.rollback import emergency_rollback

    verify_changes(db.engine, db.settings, max_seconds=None)  # the watermark: now
    refused_creates(db)
    first = verify_changes(db.engine, db.settings, max_seconds=None)
    assert first.complete and first.inconsistencies["missing_legacy"] == 1
    assert first.per_system["CASHOUT"]["inconsistencies"]["missing_legacy"] == 1
    assert first.total == 2 and first.consistent == 1  # with the one made on both sides
    assert latest_report(db.engine).id == first.id
    emergency_rollback(db.engine, db.settings, actor="oncall", reason="unified incident")
    after = verify_changes(db.engine, db.settings, max_seconds=None)
    assert after.inconsistencies["missing_legacy"] == 0 and after.consistent == after.total


def test_a_mismatch_a_round_found_stays_judged_until_a_check(db: Any) -> None:
    """A round found cashout 3 inconsistent; the next round read other rows (or none
    changed) and was clean, and the alerts went back to "resolved" while the row still
    differed (a probe: nothing had repaired it). A round's finding stays judged, as a
    full check's does, until a full check reads every row again."""
    populate(db.engine, db.settings, 500)
    checked_at = run_check(db.engine, db.settings).id
    with db.engine.begin() as conn:
        # The full check ran a while ago (the first pass reads what changed since), and
        # the row changed after it, stamped before the next round's slack.
        conn.execute(
            sa.update(check_reports)
            .where(check_reports.c.id == checked_at)
            .values(started_at=utcnow() - timedelta(minutes=10))
        )
        _set_unified(conn, 3, status=_wrong_status(db, 3), updated_at=utcnow() - 2 * SLACK)
    first = verify_changes(db.engine, db.settings, busy_max_wait=0)  # its first pass: all
    assert first.inconsistencies["status_mismatch"] == 1
    found = judged_report(db.engine, CASHOUT)
    assert found is not None and found.id == first.id
    with db.engine.begin() as conn:  # another row changes; the bad one does not
        _set_unified(conn, 40, updated_at=utcnow())
    later = verify_changes(db.engine, db.settings, busy_max_wait=0)
    assert later.total >= 1 and later.consistent == later.total
    for system in (CASHOUT, None):
        judged = judged_report(db.engine, system)
        assert judged is not None and judged.id == found.id, (system, judged)
    cashouts = (collect_snapshot(db.engine, db.settings).systems or {})[CASHOUT.value]
    assert cashouts["alert_inconsistent_rows"] == 1
    # A full check reads every row: what it finds is what is judged from then on.
    checked = run_check(db.engine, db.settings)
    assert checked.inconsistencies["status_mismatch"] == 1
    assert judged_report(db.engine, CASHOUT).id == checked.id


def _stored(
    db: Any,
    scope: str,
    *,
    started: float,
    stored: float,
    bad: str | None = None,
    systems: list[str] | None = None,
    since: float | None = None,
) -> int:
    """A report stored by hand: begun and stored that many minutes ago, one row of ``bad``
    (a system) inconsistent, every other consistent."""
    from unistatus.migration.check import store_report  # noqa: PLC0415

    every = systems or [s.value for s in LegacySystemType]
    report = CheckReport(scope=scope, systems=every, total=len(every))
    report.per_system = {
        s: {"total": 1, "consistent": 0 if s == bad else 1, "inconsistencies": {}} for s in every
    }
    report.consistent = len(every) - (bad is not None)
    now = utcnow()
    report.started_at = now - timedelta(minutes=started)
    report.created_at = now - timedelta(minutes=stored)
    report.since = None if since is None else now - timedelta(minutes=since)
    store_report(db.engine, report)
    assert report.id is not None
    return report.id


def test_what_clears_a_rounds_mismatch_is_a_full_check_begun_after_it(db: Any) -> None:
    """A review: a full check begun before the round (it may have read the row before
    it changed) cleared it; a `check --since` (which never read the row) cleared it; and
    after a `check --system` the system's figure and every system's disagreed."""
    from unistatus.migration.check_reports import FULL_SCOPE  # noqa: PLC0415

    _stored(db, FULL_SCOPE, started=60, stored=10)  # began before the round
    bad = _stored(db, CONTINUOUS_SCOPE, started=31, stored=30, bad=CASHOUT.value)
    _stored(db, CONTINUOUS_SCOPE, started=2, stored=1)
    assert judged_report(db.engine, CASHOUT).id == bad
    assert judged_report(db.engine).id == bad
    _stored(db, FULL_SCOPE, started=0.9, stored=0.8, since=40)  # a --since check
    assert judged_report(db.engine, CASHOUT).id == bad
    assert judged_report(db.engine).id == bad
    # A full check of cashouts alone, begun after the round: both clear.
    cleared = _stored(db, "CASHOUT", started=0.5, stored=0.4, systems=[CASHOUT.value])
    assert judged_report(db.engine, CASHOUT).id == cleared
    judged = judged_report(db.engine)
    assert judged is not None and judged.id != bad and judged.consistent == judged.total
