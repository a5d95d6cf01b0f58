"""Load test: real adapter writes on SQLite and PostgreSQL, small sizes."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import unistatus
import unistatus.sim.loadtest as loadtest
from conftest import Database
from support.outage import DEADLINE, Server
from unistatus.cli import app
from unistatus.db.control import get_mode, get_modes, set_mode
from unistatus.domain.statuses import DualWriteMode, LegacySystemType, UnifiedTransactionStatus
from unistatus.errors import InputError, ModeNotRestoredError, StorageError
from unistatus.migration.check import run_check
from unistatus.sim.loadtest import RunStats, percentile, run_load_test
from unistatus.sim.loadtest_targets import judge

LEGACY = ("cashouts", "escrows", "exchanges")
PHASE_1 = DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
LOAD_SESSIONS = "application_name = 'unistatus loadtest'"


def _legacy_rows(db: Database) -> int:
    return sum(db.count(t) for t in LEGACY)


def test_dual_write_run_with_baseline(db: Database) -> None:
    report = run_load_test(
        db.url,
        db.settings,
        transactions=24,
        concurrent=4,
        mode=DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY,
        baseline=True,
    )
    run, base = report.run, report.baseline
    assert base is not None and base.mode is DualWriteMode.LEGACY_ONLY
    assert run.mode is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
    assert run.errors == 0 and base.errors == 0
    # Same seed: the same walks, so the same number of operations in both runs.
    assert run.operations == base.operations > 24
    assert len(run.latencies_ms) == run.operations
    assert run.consistency_rate == 1.0 and run.consistency_checked == 24
    assert base.consistency_rate is None
    # Both runs wrote legacy rows; only the dual run wrote unified rows.
    assert _legacy_rows(db) == 48
    assert db.count("unified_transactions") == 24
    # Every transaction was walked to a final status.
    with db.engine.connect() as conn:
        statuses = {
            r[0] for r in conn.exec_driver_sql("SELECT DISTINCT status FROM unified_transactions")
        }
    assert statuses and all(UnifiedTransactionStatus(s).is_final for s in statuses)
    out = report.as_dict()
    assert set(out["dual_write_overhead_pct"]) == {"mean", "p50", "p95", "p99"}
    # The previous mode is back.
    assert get_mode(db.engine) is DualWriteMode.LEGACY_ONLY


def test_unified_only_run_restores_previous_mode(db: Database) -> None:
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, reason="test")
    report = run_load_test(db.url, db.settings, transactions=10, concurrent=3, mode="UNIFIED_ONLY")
    assert report.run.errors == 0
    assert report.run.consistency_rate is None  # legacy is frozen: not applicable
    assert db.count("unified_transactions") == 10
    # Back to a mode that writes legacy: the run's changes were replayed first, so the
    # ten transactions born in UNIFIED_ONLY now have legacy rows that agree.
    assert get_mode(db.engine) is DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY
    assert _legacy_rows(db) == 10
    with db.engine.connect() as conn:
        pending = conn.exec_driver_sql(
            "SELECT count(*) FROM unistatus_pending_legacy WHERE replayed_at IS NULL"
        ).scalar_one()
    assert pending == 0
    assert run_check(db.engine, db.settings, store=False).consistency_rate == 1.0


@pytest.mark.parametrize("one_system", [False, True], ids=["every-system", "one-system"])
def test_the_restore_leaves_a_mode_someone_else_set_during_the_run(
    db: Database, monkeypatch: pytest.MonkeyPatch, one_system: bool
) -> None:
    """An emergency rollback during `loadtest --mode ...` was undone by the run's
    restore: phase 0 with the unified side primary, 'PASS' (a probe, 4 races of 7). A
    system whose mode is no longer the one the run set is left as it is, and said."""
    from unistatus.migration.rollback import emergency_rollback  # noqa: PLC0415

    set_mode(db.engine, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, reason="phase 3", force=True)
    run_once = loadtest._run_once

    def rolled_back_during_the_run(*args: object, **kw: object) -> object:
        stats = run_once(*args, **kw)  # type: ignore[arg-type]
        which = {"system": LegacySystemType.ESCROW} if one_system else {}
        emergency_rollback(db.engine, db.settings, actor="oncall", reason="incident", **which)
        return stats

    monkeypatch.setattr(loadtest, "_run_once", rolled_back_during_the_run)
    report = run_load_test(
        db.url, db.settings, transactions=6, concurrent=2, mode="DUAL_WRITE_LEGACY_PRIMARY"
    )
    assert get_mode(db.engine, LegacySystemType.ESCROW) is DualWriteMode.LEGACY_ONLY
    restored = DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY
    rest = get_mode(db.engine, LegacySystemType.CASHOUT)
    assert rest is (restored if one_system else DualWriteMode.LEGACY_ONLY), rest
    assert report.mode_left_alone["ESCROW"] == "LEGACY_ONLY", report.mode_left_alone
    assert "mode_left_alone" in report.as_dict()


@pytest.mark.parametrize(
    ("mode", "baseline"),
    [(PHASE_1, True), (None, False), (PHASE_1, False)],
    ids=["baseline-then-load", "no-mode", "the-current-mode"],
)
def test_a_rollback_during_the_load_is_left_whatever_the_run_switched(
    db: Database, monkeypatch: pytest.MonkeyPatch, mode: DualWriteMode | None, baseline: bool
) -> None:
    """A baseline's LEGACY_ONLY counted as the run's own after its second switch had
    returned, and a run that switched nothing (no --mode, or the current one) put every
    system back: an emergency rollback of escrows during the load was undone (a second
    review). Only the mode of the run's last switch is its own; no switch, no restore."""
    from unistatus.migration.rollback import emergency_rollback  # noqa: PLC0415

    set_mode(db.engine, PHASE_1, reason="phase 1", force=True)
    run_once = loadtest._run_once

    def rolled_back_in_the_load(*args: object, **kw: object) -> object:
        stats = run_once(*args, **kw)  # type: ignore[arg-type]
        if "load" in args or kw.get("label") == "load":
            escrow = LegacySystemType.ESCROW
            emergency_rollback(db.engine, db.settings, actor="oncall", reason="x", system=escrow)
        return stats

    monkeypatch.setattr(loadtest, "_run_once", rolled_back_in_the_load)
    report = run_load_test(
        db.url, db.settings, transactions=4, concurrent=2, mode=mode, baseline=baseline
    )
    modes = get_modes(db.engine)
    assert modes[LegacySystemType.ESCROW] is DualWriteMode.LEGACY_ONLY, modes
    assert modes[LegacySystemType.CASHOUT] is PHASE_1, modes
    if baseline:
        assert report.mode_left_alone == {"ESCROW": "LEGACY_ONLY"}, report.mode_left_alone


def test_a_baseline_run_whose_second_switch_failed_is_put_back(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--baseline switches twice (LEGACY_ONLY, then the target): the second switch lost
    before it committed left the baseline's LEGACY_ONLY, which the restore took for
    someone else's switch and left: dual writes off everywhere (a review)."""
    import unistatus.sim.loadtest_mode as guard_module  # noqa: PLC0415

    set_mode(db.engine, PHASE_1, reason="phase 1", force=True)
    real, calls = guard_module.set_mode, []

    def second_lost(engine: object, mode: DualWriteMode, **kw: object) -> object:
        calls.append(mode)
        if len(calls) == 2:
            raise KeyboardInterrupt  # before the switch commits
        return real(engine, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(guard_module, "set_mode", second_lost)
    with pytest.raises(KeyboardInterrupt):
        run_load_test(
            db.url, db.settings, transactions=4, concurrent=2, mode=PHASE_1, baseline=True
        )
    assert {m for m in get_modes(db.engine).values()} == {PHASE_1}


def test_a_failed_restore_names_no_command_that_undoes_a_rollback(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore that failed named every system, escrow's emergency rollback (left alone
    on purpose) among them, and `mode set` for all: the command undid it (a review)."""
    import unistatus.sim.loadtest_mode as guard_module  # noqa: PLC0415
    from unistatus.migration.rollback import emergency_rollback  # noqa: PLC0415

    set_mode(db.engine, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, reason="phase 3", force=True)
    run_once = loadtest._run_once

    def rolled_back(*args: object, **kw: object) -> object:
        stats = run_once(*args, **kw)  # type: ignore[arg-type]
        escrow = LegacySystemType.ESCROW
        emergency_rollback(db.engine, db.settings, actor="oncall", reason="x", system=escrow)
        return stats

    real = guard_module.set_mode

    def restore_refused(engine: object, mode: DualWriteMode, **kw: object) -> object:
        if str(kw.get("reason", "")).startswith("load test finished"):
            raise StorageError("the database is down")
        return real(engine, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(loadtest, "_run_once", rolled_back)
    monkeypatch.setattr(guard_module, "set_mode", restore_refused)
    with pytest.raises(ModeNotRestoredError) as caught:
        run_load_test(
            db.url, db.settings, transactions=4, concurrent=2, mode=PHASE_1, restore_seconds=0.3
        )
    text = str(caught.value)
    assert "ESCROW" not in text.split(" run: ")[0], text
    assert "--system cashout" in text and "--system exchange" in text, text
    assert "--system escrow" not in text, text
    assert LegacySystemType.ESCROW not in caught.value.left, caught.value.left


def test_a_baseline_next_to_unified_reads_is_refused_up_front(db: Database) -> None:
    """A LEGACY_ONLY baseline writes rows unified never sees: switching to (or back to) a
    unified-read mode after it would be refused as stale, so the run is refused before
    it writes anything, instead of failing half way and leaving LEGACY_ONLY behind."""
    with pytest.raises(InputError, match="baseline"):
        run_load_test(
            db.url, db.settings, transactions=5, concurrent=2, mode="UNIFIED_ONLY", baseline=True
        )
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, reason="test")
    with pytest.raises(InputError, match="baseline"):
        run_load_test(db.url, db.settings, transactions=5, concurrent=2, baseline=True)
    assert get_mode(db.engine) is DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY
    assert _legacy_rows(db) == 0


def test_bad_sizes_are_refused_and_write_nothing(db: Database) -> None:
    with pytest.raises(InputError):
        run_load_test(db.url, db.settings, transactions=0, concurrent=2)
    with pytest.raises(InputError):
        run_load_test(db.url, db.settings, transactions=5, concurrent=0)
    with pytest.raises(InputError):
        run_load_test("sqlite://", db.settings, transactions=5, concurrent=2)
    assert _legacy_rows(db) == 0


def test_cli_json(sqlite_db: Database) -> None:
    result = CliRunner().invoke(
        app,
        [
            "--database-url",
            sqlite_db.url,
            "loadtest",
            "--transactions",
            "12",
            "--concurrent",
            "3",
            "--mode",
            "DUAL_WRITE_LEGACY_PRIMARY",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["transactions"] == 12 and data["concurrent"] == 3
    assert set(data["latency_ms"]) >= {"mean", "p50", "p95", "p99"}
    assert data["error_rate"] == 0.0 and data["consistency_rate"] == 1.0
    assert data["throughput_tps"] > 0


def test_percentile_nearest_rank() -> None:
    data = [float(i) for i in range(1, 101)]
    assert percentile(data, 50) == 50.0
    assert percentile(data, 95) == 95.0
    assert percentile(data, 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


SCRIPT = Path(__file__).parents[2] / "scripts" / "load_test_dual_write.py"


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    """The script as an operator runs it, output to pipes (not a terminal)."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def test_load_test_script(sqlite_db: Database) -> None:
    """`scripts/load_test_dual_write.py --transactions=N --concurrent=C`, as documented."""
    done = _script("--transactions=9", "--concurrent=3", "--json", "--database-url", sqlite_db.url)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["mode"] == "DUAL_WRITE_LEGACY_PRIMARY"  # the script's default
    assert data["transactions"] == 9 and data["error_rate"] == 0.0
    assert data["consistency_rate"] == 1.0 and isinstance(data["targets_met"], bool)
    assert get_mode(sqlite_db.engine) is DualWriteMode.LEGACY_ONLY


def test_load_test_script_help_names_the_script_and_its_database_option() -> None:
    done = _script("--help")
    assert done.returncode == 0, done.stderr
    usage = next(line for line in done.stdout.splitlines() if "Usage:" in line)
    assert usage.split() == ["Usage:", "load_test_dual_write.py", "[OPTIONS]"]
    assert "--database-url" in done.stdout and "UNISTATUS_DATABASE_URL" in done.stdout
    assert "[default: DUAL_WRITE_LEGACY_PRIMARY]" in done.stdout
    assert "Examples:" in done.stdout and "<bool>" not in done.stdout


def test_load_test_script_in_a_log_shows_progress_and_a_verdict(sqlite_db: Database) -> None:
    done = _script("--transactions=20", "--concurrent=2", "--database-url", sqlite_db.url)
    progress = [line for line in done.stderr.splitlines() if line.startswith("load: ")]
    # A line per tenth of the run (not a bar: stderr is not a terminal), the last at 100%.
    assert len(progress) == 10, done.stderr
    assert progress[0].startswith("load: 2/20 transactions (10%)")
    assert progress[-1].startswith("load: 20/20 transactions (100%)")
    out = done.stdout
    assert "targets of the migration strategy" in out
    for target in ("mean latency", "p95 latency", "error rate", "consistency"):
        assert target in out
    # The verdict and the exit code say the same.
    assert ("PASS: every target" in out and done.returncode == 0) or (
        "FAIL: " in out and done.returncode == 1
    ), (done.returncode, out)


def test_targets_judge_each_bound() -> None:
    fast = {"mean": 12.0, "p95": 40.0}
    assert [t.passed for t in judge(fast, 0.0, 1.0)] == [True, True, True, True]
    slow = {"mean": 150.0, "p95": 250.0}
    results = {t.name: t for t in judge(slow, 0.002, 0.998)}
    assert results["mean latency"].passed is True
    assert results["p95 latency"].passed is False and results["p95 latency"].target == "< 200 ms"
    assert results["error rate"].passed is False and results["error rate"].value == "0.200%"
    assert results["consistency"].passed is False
    legacy_only = {t.name: t for t in judge(fast, 0.0, None)}
    assert legacy_only["consistency"].passed is None  # not applicable outside dual modes


def test_a_run_over_the_latency_target_is_not_met() -> None:
    run = RunStats(DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, transactions=10, concurrent=2)
    run.operations, run.consistency_rate = 40, 1.0
    run.latencies_ms = [5.0] * 30 + [400.0] * 10  # p95 400 ms
    assert run.targets_met is False
    data = run.as_dict()
    assert data["targets_met"] is False
    assert {t["name"]: t["passed"] for t in data["targets"]}["p95 latency"] is False
    run.latencies_ms = [5.0] * 40
    assert run.targets_met is True


# --- the write mode put back after the run, whatever happens (L1) ----------------------


class _Retrying(logging.Handler):
    """Sets ``seen`` when the load test says it will try restoring the mode again."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.seen.set()


@pytest.mark.postgres
def test_the_mode_is_restored_once_the_database_is_back(pg: Database) -> None:
    """The database refuses connections as the run ends: the restore fails, retries,
    and puts the previous mode back once the database accepts connections again."""
    set_mode(pg.engine, PHASE_1, reason="phase 1")
    server = Server(pg)
    retrying = _Retrying()
    logger = logging.getLogger("unistatus.sim.loadtest")
    logger.addHandler(retrying)

    def outage_at_the_end(_label: str, done: int, total: int) -> None:
        if done == total:
            server.allow_connections(False)
            server.terminate(LOAD_SESSIONS)

    def back_after_a_failed_restore() -> None:
        retrying.seen.wait(DEADLINE)
        server.allow_connections(True)

    back = threading.Thread(target=back_after_a_failed_restore)
    back.start()
    try:
        report = run_load_test(
            pg.url,
            pg.settings,
            transactions=8,
            concurrent=2,
            mode=DualWriteMode.LEGACY_ONLY,
            on_progress=outage_at_the_end,
        )
    finally:
        retrying.seen.set()
        back.join()
        logger.removeHandler(retrying)
        server.close()
    assert report.run.errors == 0
    assert get_mode(pg.engine) is PHASE_1


def _outage_at_the_final_check(monkeypatch: pytest.MonkeyPatch, server: Server) -> None:
    """The database refuses connections, and the load test's sessions are ended, as the
    run's final check begins (the restore then meets the outage)."""
    check = loadtest._check

    def outage_then_check(*args: object) -> None:
        server.allow_connections(False)
        server.terminate(LOAD_SESSIONS)
        check(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(loadtest, "_check", outage_then_check)


@pytest.mark.postgres
def test_a_mode_left_behind_is_named_with_the_command_that_fixes_it(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database stays unreachable for longer than the restore retries: exit 2, and
    the one line says which mode every system was left in instead of which, and the
    exact command that puts it back."""
    set_mode(pg.engine, PHASE_1, reason="phase 1")
    server = Server(pg)
    monkeypatch.setattr(loadtest, "RESTORE_SECONDS", 0.5, raising=False)
    _outage_at_the_final_check(monkeypatch, server)
    try:
        result = CliRunner().invoke(
            app,
            ["--database-url", pg.url, "loadtest", "-n", "6", "-c", "2", "--mode", "LEGACY_ONLY"],
            catch_exceptions=False,
        )
    finally:
        server.close()
    assert result.exit_code == 2, result.output
    error = result.stderr.replace("\n", " ")
    assert "left at LEGACY_ONLY instead of DUAL_WRITE_LEGACY_PRIMARY" in error, error
    assert "CASHOUT, ESCROW, EXCHANGE" in error, error
    assert (
        'unistatus mode set DUAL_WRITE_LEGACY_PRIMARY --reason "restore the mode after an '
        'interrupted load test"' in error
    ), error
    assert "not currently accepting connections" in error, error  # why, in the driver's words
    assert get_mode(pg.engine) is DualWriteMode.LEGACY_ONLY  # what the message says


@pytest.mark.postgres
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_run_stopped_midway_restores_the_mode(pg: Database, stop: signal.Signals) -> None:
    """Ctrl-C or SIGTERM in the middle of a run: it stops soon (the transactions not
    started are never started), puts the previous mode back and says so (exit 130)."""
    set_mode(pg.engine, PHASE_1, reason="phase 1")
    src = str(Path(unistatus.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "COLUMNS": "200"}
    args = ["--database-url", pg.url, "loadtest", "-n", "2000", "-c", "2", "--mode", "LEGACY_ONLY"]
    with subprocess.Popen(
        [sys.executable, "-m", "unistatus", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the first tenth is done: mid-way
        assert first.startswith("load: 200/2,000"), first
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "interrupted" in err and "DUAL_WRITE_LEGACY_PRIMARY" in err, err
    assert get_mode(pg.engine) is PHASE_1
    assert _legacy_rows(pg) < 2000


@pytest.mark.postgres
def test_a_run_error_and_a_failed_restore_are_both_named(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final check fails in the outage, then the restore does too: the error is the
    mode left behind, and it keeps the run's own error (in the line and as run_error)."""
    server = Server(pg)
    _outage_at_the_final_check(monkeypatch, server)
    try:
        with pytest.raises(ModeNotRestoredError) as caught:
            run_load_test(
                pg.url, pg.settings, transactions=4, concurrent=2, mode=PHASE_1, restore_seconds=0.3
            )
    finally:
        server.close()
    error = caught.value
    assert error.left == dict.fromkeys(LegacySystemType, PHASE_1)
    assert error.previous is DualWriteMode.LEGACY_ONLY
    assert isinstance(error.run_error, StorageError)
    assert "the run itself had failed first: " in str(error)
    assert error.command in str(error) and "mode set LEGACY_ONLY" in error.command
    assert get_mode(pg.engine) is PHASE_1
