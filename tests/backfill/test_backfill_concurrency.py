"""The backfill on PostgreSQL under concurrency: live dual writes, workers, timeouts, a lost server."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support.backfill_data import inconsistencies
from unistatus.adapter.core import DualWriteAdapter
from unistatus.backfill import progress, read_workers, run_backfill, runner
from unistatus.backfill.activity import Activity
from unistatus.backfill.plan import plan_or_join
from unistatus.backfill.worker import Worker
from unistatus.db.control import set_mode
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_chunks as CH
from unistatus.db.tables_backfill import backfill_jobs as J
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import StorageError
from unistatus.migration.check import run_check
from unistatus.sim.seed import id_ranges, seed_legacy
from unistatus.sim.traffic import run_traffic

pytestmark = pytest.mark.postgres
UNISTATUS = str(Path(sys.executable).parent / "unistatus")


def test_backfill_100k_under_live_dual_writes_is_fully_consistent(pg: Any) -> None:
    seed_legacy(pg.engine, pg.settings, 100_000, seed=3)
    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 2")
    adapter = DualWriteAdapter(pg.engine, settings=pg.settings)
    stop = threading.Event()
    box: dict[str, Any] = {}
    traffic = threading.Thread(
        target=lambda: box.update(
            t=run_traffic(
                adapter,
                threads=8,
                seconds=None,
                stop=stop,
                new_ratio=0.15,
                existing=id_ranges(pg.engine, pg.settings),
                seed=5,
            )
        )
    )
    traffic.start()
    time.sleep(0.5)  # live writes reach rows the backfill has not copied yet
    report = run_backfill(pg.engine, pg.settings, batch_size=5_000).as_dict()
    stop.set()
    traffic.join(60)
    written = box["t"]
    assert written.errors == 0, written.error_samples
    assert written.updates > 50 and written.creates > 5
    assert report["complete"] and report["quarantined"] == 0
    # Some rows were created by the adapter before the backfill reached them.
    assert report["already_present"] > 0
    # The mark includes rows the adapter created before the run started.
    total = sum(s["total"] for s in report["systems"].values())
    assert total >= 100_000
    assert report["inserted"] + report["already_present"] == total

    check = run_check(pg.engine, pg.settings, store=False)
    assert check.is_consistent, check.as_dict()["inconsistencies"]
    assert check.total >= 100_000
    # Every unified row carries the latest legacy status (the adapter's, not a stale copy).
    tables = resolve_legacy_tables(pg.engine, pg.settings)
    with pg.engine.connect() as conn:
        for system, lt in tables.items():
            stale = conn.execute(
                sa.select(sa.func.count())
                .select_from(
                    lt.table.join(
                        U, sa.and_(U.c.legacy_system == system.value, U.c.legacy_id == lt.id)
                    )
                )
                .where(U.c.legacy_status.is_distinct_from(lt.status))
            ).scalar_one()
            assert stale == 0, system
        touched_backfilled = conn.execute(
            sa.select(sa.func.count()).where(U.c.origin == "backfill", U.c.version > 1)
        ).scalar_one()
    assert touched_backfilled > 0  # live writes also landed on rows after the backfill copied them


def test_several_workers_share_the_chunks_without_gap_or_overlap(pg: Any) -> None:
    """Three workers, started together, each claim chunks; together they tile every key
    range once. The start is synchronised, not hoped for: the chunk table is locked
    until all three workers wait on it, so each one's first claim is a chunk of its own
    (SKIP LOCKED), however slowly their threads were started."""
    seed_legacy(pg.engine, pg.settings, 15_000, seed=4, unmappable=9)
    # The workers' first statements wait for the lock below: no timeout may cut them off.
    settings = pg.settings.model_copy(
        update={"lock_timeout_ms": 120_000, "statement_timeout_ms": 120_000}
    )
    plan_or_join(ops_for(pg.engine), resolve_legacy_tables(pg.engine, settings), 100)
    box: dict[str, Any] = {}
    with pg.engine.connect() as gatekeeper:
        tx = gatekeeper.begin()
        gatekeeper.execute(sa.text("LOCK TABLE unistatus_backfill_chunks IN EXCLUSIVE MODE"))
        runner = threading.Thread(
            target=lambda: box.update(
                report=run_backfill(pg.engine, settings, batch_size=100, workers=3)
            )
        )
        runner.start()
        deadline = time.monotonic() + 60
        while _waiting_on_chunks(pg.engine) < 3:
            assert runner.is_alive() and time.monotonic() < deadline, "workers never queued"
            time.sleep(0.05)
        tx.commit()
    runner.join(120)
    report = box["report"].as_dict()
    assert report["workers"] == 3
    assert report["inserted"] == 15_000 and report["quarantined"] == 9
    assert report["complete"]
    assert pg.count("unified_transactions") == 15_000
    with pg.engine.connect() as conn:
        chunks = conn.execute(sa.select(CH).order_by(CH.c.system, CH.c.start_id)).mappings().all()
        jobs_hwm = dict(
            conn.execute(
                sa.text("SELECT system, high_water_mark FROM unistatus_backfill_jobs")
            ).all()
        )
    assert {c["state"] for c in chunks} == {"done"}
    assert {c["attempts"] for c in chunks} == {1}
    assert len({c["worker"] for c in chunks}) == 3  # every worker claimed chunks of its own
    for system in ("CASHOUT", "ESCROW", "EXCHANGE"):
        mine = [c for c in chunks if c["system"] == system]
        for a, b in zip(mine, mine[1:], strict=False):
            assert b["start_id"] == a["end_id"] + 1  # tiles the key space: no gap, no overlap
        assert mine[-1]["end_id"] == jobs_hwm[system]
        assert sum(c["inserted"] + c["quarantined"] for c in mine) == sum(c["rows"] for c in mine)


def _waiting_on_chunks(engine: sa.Engine) -> int:
    """Backends waiting for a lock on the chunk table (a fresh connection per call)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'relation' "
                    "AND relation = 'unistatus_backfill_chunks'::regclass "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            ).scalar_one()
        )


def test_a_timed_out_batch_is_retried_not_skipped(pg: Any) -> None:
    seed_legacy(pg.engine, pg.settings, 2_000, seed=6, systems=["cashout"])
    settings = pg.settings.model_copy(update={"lock_timeout_ms": 150})
    lt = resolve_legacy_tables(pg.engine, settings)[LegacySystemType.CASHOUT]
    # Another transaction holds a unified row of the first chunk (uncommitted insert):
    # the batch waits on it, hits the lock timeout, and must be retried.
    blocker = pg.engine.connect()
    tx = blocker.begin()
    blocker.execute(
        sa.insert(U).values(
            id="UTX100000000000001",
            transaction_type="WALLET_CASHOUT",
            legacy_system="CASHOUT",
            legacy_id=1,
            user_id=1,
            amount=1,
            currency="USD",
            status="PENDING",
            legacy_status="PENDING",
            version=2,
            origin="dual_write",
            created_at=sa.func.now(),
            updated_at=sa.func.now(),
        )
    )

    def release_once_retried() -> None:
        """The row let go once a batch has waited for it past the lock timeout (150 ms;
        let go 0.5 s after the first wait is seen), not after a fixed time from the
        start: a backfill that took longer than that to reach its first batch (a loaded
        CI machine) found the row free and retried nothing."""
        waiting = sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with pg.engine.connect() as conn:
                if conn.execute(waiting).scalar_one():
                    time.sleep(0.5)
                    break
            time.sleep(0.02)
        tx.rollback()

    releasing = threading.Thread(target=release_once_retried)
    releasing.start()
    try:
        report = run_backfill(
            pg.engine, settings, systems=[LegacySystemType.CASHOUT], batch_size=500
        ).as_dict()
    finally:
        releasing.join(timeout=40)
        blocker.close()
    assert report["systems"]["CASHOUT"]["this_run"]["retries"] >= 1
    assert report["inserted"] == 2_000 and report["complete"]
    with pg.engine.connect() as conn:
        first = conn.execute(sa.select(CH.c.attempts).where(CH.c.start_id == 1)).scalar_one()
        assert conn.execute(sa.select(sa.func.count()).select_from(lt.table)).scalar_one() == 2_000
    assert first >= 2
    assert not inconsistencies(pg.engine, settings)


@pytest.mark.parametrize("workers", [1, 2])
def test_server_connection_lost_mid_batch_is_reported_and_resumable(pg: Any, workers: int) -> None:
    """With two workers, the one whose connection is lost stops the other after its
    batch: the command ends with one line, not a run finished by the survivor."""
    seed_legacy(pg.engine, pg.settings, 40_000, seed=7)
    # Phase 2's mode: a backfill in LEGACY_ONLY says a warning first (its own line).
    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 2")
    # The operator's command, in its own process; the server kills its connection
    # while a batch statement is running.
    proc = subprocess.Popen(
        [UNISTATUS, "--database-url", pg.url, "backfill", "--batch-size", "200"]
        + ["--target-batch-ms", "0", "--workers", str(workers), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killer = sa.create_engine(sa.make_url(pg.url), isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + 30
    with killer.connect() as conn:
        while proc.poll() is None and time.monotonic() < deadline:
            if progress(pg.engine, pg.settings)["CASHOUT"]["done"] > 0:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND state = 'active' AND query LIKE 'WITH unistatus_claim%'"
                    )
                )
            time.sleep(0.01)
    killer.dispose()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, (out, err)
    message = err.strip()
    assert message.startswith("error:") and "\n" not in message, message
    assert "rerun" in message and "Traceback" not in err
    mid = progress(pg.engine, pg.settings)
    assert not all(p["complete"] for p in mid.values())
    with pg.engine.connect() as conn:
        done_rows = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(CH.c.inserted), 0)).where(CH.c.state == "done")
        ).scalar_one()
    assert done_rows > 0
    assert pg.count("unified_transactions") == done_rows  # the checkpoint matches the data
    report = run_backfill(pg.engine, pg.settings, batch_size=200).as_dict()
    assert report["complete"] and report["inserted"] == 40_000
    assert report["rows_this_run"] == 40_000 - done_rows
    assert pg.count("unified_transactions") == 40_000


def test_one_failed_worker_stops_the_others_at_once(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error of one worker thread ends the run: the other stops after its batch,
    cutting short its pacing wait (5 s per 500-row batch at 100 rows/s here),
    and the error is the run's."""
    seed_legacy(pg.engine, pg.settings, 20_000, seed=8)
    copy = Worker.run
    failed_at: list[float] = []

    def run(self: Worker) -> Any:
        if self.name.endswith(".1"):
            # Once the other has copied a batch (it then waits for its pace): watched,
            # not slept for, as a loaded machine may take longer than any fixed time.
            deadline = time.monotonic() + 30
            while progress_done(pg) == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            failed_at.append(time.monotonic())
            raise StorageError("injected: this worker's database went away")
        return copy(self)

    monkeypatch.setattr(Worker, "run", run)
    with pytest.raises(StorageError, match="injected"):
        run_backfill(
            pg.engine,
            pg.settings,
            batch_size=500,
            target_batch_ms=0,
            max_rows_per_second=100,
            workers=2,
        )
    waited = time.monotonic() - failed_at[0]
    assert waited < 3, f"the run waited {waited:.1f} s for the other worker's pace"
    assert 0 < progress_done(pg) < 20_000


def progress_done(db: Any) -> int:
    """Rows the backfill has copied so far, every system's."""
    return sum(p["done"] for p in progress(db.engine, db.settings).values())


def test_ctrl_c_ends_the_run_once_every_worker_has_said_it_finished(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the run waits for its worker threads: the run ends (KeyboardInterrupt)
    only once each worker has ended its batch and written its row `finished`. The
    process exits right after it, and a worker still in its batch then dies with it, its
    row left `running`: `backfill status` showed a running backfill that nobody ran.
    Here the first worker takes a second to end (its last batch on a loaded machine)."""
    seed_legacy(pg.engine, pg.settings, 20_000, seed=8)
    finish = Activity.finish

    def slow_finish(self: Activity, clock: float) -> None:
        if self.worker.endswith(".0"):
            time.sleep(1.0)
        finish(self, clock)

    monkeypatch.setattr(Activity, "finish", slow_finish)
    main = threading.main_thread().ident
    assert main is not None

    def ctrl_c() -> None:
        """SIGINT to the main thread (as a terminal's Ctrl-C) once both workers copy."""
        done = sa.select(sa.func.coalesce(sa.func.sum(CH.c.rows), 0)).where(CH.c.state == "done")
        deadline = time.monotonic() + 10  # the run takes 20 s: still running then
        while time.monotonic() < deadline:
            with pg.engine.connect() as conn:
                if conn.execute(done).scalar_one() >= 400:
                    break
            time.sleep(0.02)
        signal.pthread_kill(main, signal.SIGINT)

    interrupter = threading.Thread(target=ctrl_c, name="ctrl-c")
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_backfill(
                pg.engine,
                pg.settings,
                batch_size=200,
                target_batch_ms=0,
                max_rows_per_second=1000,
                workers=2,
            )
        workers = read_workers(pg.engine, include_finished=True)
        states = {p["state"] for p in progress(pg.engine, pg.settings).values()}
    finally:
        interrupter.join()
        deadline = time.monotonic() + 10  # a worker left behind ends before the next test
        while time.monotonic() < deadline and any(
            t.name.startswith("backfill-") for t in threading.enumerate()
        ):
            time.sleep(0.05)
    assert [w["state"] for w in workers] == ["finished", "finished"], workers
    assert states == {"interrupted"}


def test_the_workers_copy_on_the_caller_s_engine(pg: Any) -> None:
    """Its connect arguments, events and credentials are the workers' too: two workers
    check out connections of the caller's engine at once (a pool too small for them:
    an engine of their own, from its URL)."""
    seed_legacy(pg.engine, pg.settings, 30_000, seed=4)
    pg.engine.dispose()
    opened: list[int] = []

    def count(dbapi_conn: Any, record: Any) -> None:
        opened.append(1)

    sa.event.listen(pg.engine, "connect", count)
    try:
        report = run_backfill(pg.engine, pg.settings, batch_size=100, workers=2)
    finally:
        sa.event.remove(pg.engine, "connect", count)
    assert report.complete and report.inserted == 30_000
    assert len(opened) >= 2  # the planning's connection and at least one more at once
    small = sa.create_engine(pg.url, pool_size=1, max_overflow=0)
    try:
        assert runner._pool_too_small(small, 2) and not runner._pool_too_small(pg.engine, 2)
    finally:
        small.dispose()


def test_a_second_planner_waits_for_the_first_whatever_its_lock_timeout(pg: Any) -> None:
    """Two hosts starting `backfill` together: the second planner waits on the job's row
    while the first plans its chunks (seconds on a large table), then joins them. With
    a command's connections bounded by lock_timeout_ms it gave up after it instead ("cannot
    plan the backfill: ... lock timeout"; found by review): the wait is the design."""
    seed_legacy(pg.engine, pg.settings, 300, seed=5)
    tables = resolve_legacy_tables(pg.engine, pg.settings)
    first = plan_or_join(ops_for(pg.engine), tables, 100)
    bounded = create_engine(pg.url, lock_timeout_ms=200)
    box: dict[str, Any] = {}
    try:
        with pg.engine.connect() as planning:  # the first planner, still planning
            planning.begin()
            planning.execute(sa.select(J).where(J.c.system == "CASHOUT").with_for_update())
            second = threading.Thread(
                target=lambda: box.update(jobs=plan_or_join(ops_for(bounded), tables, 100))
            )
            second.start()
            time.sleep(1.0)  # five of its lock timeouts
            planning.commit()
        second.join(30)
    finally:
        bounded.dispose()
    assert "jobs" in box, "the second planner failed (its error is in the log above)"
    assert box["jobs"][LegacySystemType.CASHOUT].run_id == first[LegacySystemType.CASHOUT].run_id


def test_a_planner_behind_a_locked_legacy_table_gives_up_within_its_lock_timeout(pg: Any) -> None:
    """Only where two planners meet is the wait unbounded: a planner behind a session
    holding the legacy table (a DBA's LOCK TABLE, a migration's DDL) gives up within the
    connection's lock_timeout, and holds the job's row no longer (found by review: the
    whole planning transaction waited without end)."""
    seed_legacy(pg.engine, pg.settings, 30, seed=6)
    tables = resolve_legacy_tables(pg.engine, pg.settings)
    bounded = create_engine(pg.url, lock_timeout_ms=200)
    try:
        with pg.engine.connect() as dba:
            dba.begin()
            dba.exec_driver_sql("LOCK TABLE cashouts IN ACCESS EXCLUSIVE MODE")
            began = time.monotonic()
            with pytest.raises((sa.exc.OperationalError, StorageError)):
                plan_or_join(ops_for(bounded), tables, 100)
            took = time.monotonic() - began
            dba.rollback()
    finally:
        bounded.dispose()
    assert took < 10, took
