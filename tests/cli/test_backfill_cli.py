"""`unistatus backfill` as an operator runs it: JSON shapes, exit codes, kill -9 and resume."""

from __future__ import annotations

import gc
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import Result

from support.backfill_data import inconsistencies, interrupted_job
from support.cli_run import UNISTATUS, as_json, cli, runner  # noqa: F401
from unistatus.backfill import progress, read_workers, run_backfill
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.consistency import InconsistencyKind
from unistatus.sim.seed import seed_legacy


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert err.startswith("error:") and "\n" not in err, err
    return err


def test_json_shapes_of_every_subcommand(db: Any) -> None:
    seed_legacy(db.engine, db.settings, 600, seed=2, unmappable=6)
    dry = as_json(cli(db.url, "backfill", "--dry-run", "--json"))
    assert dry["dry_run"] is True and dry["inserted"] == 600 and dry["quarantined"] == 6
    assert db.count("unified_transactions") == 0

    run = as_json(cli(db.url, "backfill", "--system", "cashout", "--batch-size", "50", "--json"))
    assert {"inserted", "already_present", "quarantined", "systems"} <= set(run)
    assert set(run["systems"]) == {"CASHOUT"}
    assert run["inserted"] == 200 and run["quarantined"] == 2
    cashout = run["systems"]["CASHOUT"]
    assert {"total", "done", "percent", "complete", "state", "this_run"} <= set(cashout)

    status = as_json(cli(db.url, "backfill", "status", "--json"))
    assert status["quarantined"] == 2
    for name, p in status["systems"].items():
        assert {
            "total",
            "done",
            "percent",
            "complete",
            "state",
            "rows_per_second",
            "updated_at",
        } <= set(p)
        assert 0.0 <= p["percent"] <= 100.0
        assert p["state"] == ("complete" if name == "CASHOUT" else "not_started")

    paused = as_json(cli(db.url, "backfill", "pause", "--reason", "window", "--json"))
    assert paused["paused"] is True and paused["reason"] == "window"
    assert as_json(cli(db.url, "backfill", "status", "--json"))["systems"]["CASHOUT"]["paused"]
    resumed = as_json(cli(db.url, "backfill", "resume", "--json"))
    assert resumed["paused"] is False

    # One system's backfill on its own: the others go on; resuming all resumes it too.
    cli(db.url, "backfill", "pause", "--system", "escrow", "--reason", "escrow freeze")
    systems = as_json(cli(db.url, "backfill", "status", "--json"))["systems"]
    assert systems["ESCROW"]["paused"] and not systems["CASHOUT"]["paused"]
    assert cli(db.url, "backfill", "pause", "--system", "bogus", "--reason", "x").exit_code == 2
    cli(db.url, "backfill", "resume", "--json")
    assert not as_json(cli(db.url, "backfill", "status", "--json"))["systems"]["ESCROW"]["paused"]

    rest = as_json(cli(db.url, "backfill", "--json"))
    # cashout was complete: a new job re-reads it and finds every row already present.
    assert rest["inserted"] == 400 and rest["already_present"] == 200 and rest["complete"]
    retry = as_json(cli(db.url, "backfill", "--retry-quarantine", "--json"))
    assert retry["still_unmappable"] == 6 and "systems" in retry
    undone = as_json(cli(db.url, "backfill", "undo", "--reason", "start over", "--json"))
    assert undone["removed"] == 600 and db.count("unified_transactions") == 0

    text = cli(db.url, "backfill", "--system", "escrow")
    assert text.exit_code == 0 and "inserted" in text.stdout


def test_bad_options_exit_2_and_write_nothing(db: Any) -> None:
    seed_legacy(db.engine, db.settings, 30, seed=2)
    assert "payouts" in one_line_error(cli(db.url, "backfill", "--system", "payouts"))
    assert cli(db.url, "backfill", "--batch-size", "0").exit_code == 2
    assert cli(db.url, "backfill", "--workers", "0").exit_code == 2
    assert "reason" in cli(db.url, "backfill", "pause").output.lower()
    assert db.count("unified_transactions") == 0 and db.count("unistatus_backfill_jobs") == 0


def test_sigkill_at_random_points_then_resume_is_exactly_once(db: Any) -> None:
    n, bad = 9_000, 9
    seed_legacy(db.engine, db.settings, n, seed=8, unmappable=bad)
    base = [UNISTATUS, "--database-url", db.url, "backfill", "--batch-size", "500", "--json"]
    rng = random.Random(12)
    kills = 0
    ended = ""
    for _ in range(3):
        before = _done(db)
        # 2000 rows/s: the 9,000 rows take 4.5 s, so a test process held up for a second
        # or two (a busy machine, a collection of its heap) still kills each run midway.
        proc = subprocess.Popen(
            [*base, "--max-rows-per-second", "2000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while proc.poll() is None and _done(db) <= before and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is not None:
            out, err = proc.communicate()
            ended = f"exit {proc.returncode}: {err[-2000:]} {out[-1000:]}"
            break
        time.sleep(rng.uniform(0.0, 0.15))  # mid-batch or between batches
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills += 1
    assert kills >= 3, f"run {kills + 1} ended before it was killed, {ended}"
    assert not all(p["complete"] for p in progress(db.engine, db.settings).values())

    final = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    report = json.loads(final.stdout)
    # Counts are per job, across every killed run: each row was counted exactly once.
    assert report["complete"] and report["inserted"] == n and report["quarantined"] == bad
    assert any(s["resumed"] for s in report["systems"].values())
    with db.engine.connect() as conn:
        rows, distinct = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(
                    sa.distinct(U.c.legacy_system + ":" + sa.cast(U.c.legacy_id, sa.String))
                ),
            )
        ).one()
    assert rows == distinct == n
    assert db.count("unistatus_backfill_quarantine") == bad
    kinds = Counter(i.kind for i in inconsistencies(db.engine, db.settings))
    assert kinds == {
        InconsistencyKind.UNMAPPABLE_LEGACY: bad,
        InconsistencyKind.MISSING_UNIFIED: bad,
    }


def test_sqlite_database_gone_is_one_line_and_the_run_resumes(sqlite_db: Any) -> None:
    db = sqlite_db
    seed_legacy(db.engine, db.settings, 3_000, seed=5)
    batches = {"n": 0}

    def stop_after_three(system: str, done: int, total: int) -> None:
        batches["n"] += done > 0
        if batches["n"] > 3:
            raise KeyboardInterrupt  # the operator's Ctrl-C between two batches

    with pytest.raises(KeyboardInterrupt):
        run_backfill(db.engine, db.settings, batch_size=100, progress=stop_after_three)
    kept = sum(int(p["done"]) for p in progress(db.engine, db.settings).values())
    assert 0 < kept < 3_000
    path = Path(db.url.removeprefix("sqlite:///"))
    db.engine.dispose()
    moved = path.with_suffix(".away")
    os.replace(path, moved)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    try:
        err = one_line_error(cli(db.url, "backfill", "--batch-size", "100"))
        assert "does not exist" in err or "database" in err
    finally:
        gc.collect()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.replace(moved, path)
    report = as_json(cli(db.url, "backfill", "--batch-size", "100", "--json"))
    assert report["complete"] and report["inserted"] == 3_000
    assert report["rows_this_run"] == 3_000 - kept  # committed batches were kept
    assert report["systems"]["CASHOUT"]["resumed"]


def _done(db: Any) -> int:
    return sum(int(p["done"]) for p in progress(db.engine, db.settings).values())


def _copiers(db: Any) -> int:
    """Server sessions of other clients running a statement on this database."""
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND state <> 'idle'"
                )
            ).scalar_one()
        )


def test_workers_stop_when_the_backfill_process_is_killed(pg: Any) -> None:
    """kill -9 of `backfill --workers 2`: nothing goes on copying behind it, the job
    stays true (not complete, or complete with its finish time), and the next run
    copies every row exactly once."""
    rows = 30_000
    seed_legacy(pg.engine, pg.settings, rows, seed=4)
    proc = subprocess.Popen(
        [UNISTATUS, "--database-url", pg.url, "backfill", "--workers", "2"]
        + ["--batch-size", "200", "--max-rows-per-second", "1500", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and _done(pg) < 600 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the backfill ended before it could be killed"
        names = [w["worker"] for w in read_workers(pg.engine)]
        assert sorted(n.rsplit(":", 1)[1] for n in names) == [
            f"{proc.pid}.0",
            f"{proc.pid}.1",
        ], names
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while _copiers(pg) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _copiers(pg) == 0, "a killed backfill's sessions went on working"
    done = _done(pg)
    time.sleep(1)
    assert _done(pg) == done < rows, "rows were copied after the backfill was killed"
    state = progress(pg.engine, pg.settings)
    assert not all(p["complete"] for p in state.values())
    assert all(p["finished_at"] for p in state.values() if p["complete"])
    again = as_json(cli(pg.url, "backfill", "--workers", "2", "--json"))
    assert again["complete"] and again["inserted"] == rows
    with pg.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(U)).scalar_one() == rows


def test_ctrl_c_stops_every_worker_after_its_batch(pg: Any) -> None:
    """Ctrl-C of `backfill --workers 2`: both workers stop after their batch (each one
    transaction), the command ends at once, and the next run copies the rest once."""
    rows = 30_000
    seed_legacy(pg.engine, pg.settings, rows, seed=5)
    proc = subprocess.Popen(
        [UNISTATUS, "--database-url", pg.url, "backfill", "--workers", "2"]
        + ["--batch-size", "200", "--target-batch-ms", "0", "--max-rows-per-second", "1500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and _done(pg) < 600 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the backfill ended before it could be interrupted"
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        waited = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert waited < 3, f"Ctrl-C waited {waited:.1f} s for the workers"
    assert _copiers(pg) == 0
    done = _done(pg)
    assert 600 <= done < rows
    assert pg.count("unified_transactions") == done  # every batch whole or not at all
    again = as_json(cli(pg.url, "backfill", "--workers", "2", "--json"))
    assert again["complete"] and again["inserted"] == rows
    assert again["rows_this_run"] == rows - done


def test_a_backfill_started_while_paused_says_so_and_goes_on_once_resumed(db: Any) -> None:
    """A pause left by a rollback (or an operator) made `backfill` wait in silence,
    forever as far as its operator could tell: it says who paused it, why, and how to
    resume, whatever its output (here --json, off a terminal), then runs once resumed."""
    seed_legacy(db.engine, db.settings, 300, seed=3)
    assert cli(db.url, "backfill", "pause", "--reason", "peak hours").exit_code == 0
    proc = subprocess.Popen(
        [UNISTATUS, "--database-url", db.url, "backfill", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
    try:
        try:
            line = lines.get(timeout=30)
        except queue.Empty:
            pytest.fail("backfill waits on the pause without a word")
        assert "paused" in line and "peak hours" in line, line
        assert "unistatus backfill resume" in line
        assert proc.poll() is None and db.count("unified_transactions") == 0  # waiting
        assert cli(db.url, "backfill", "resume", "--reason", "quiet now").exit_code == 0
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and json.loads(out)["inserted"] == 300


def test_a_backfill_interrupted_with_ctrl_c_is_shown_as_interrupted(db: Any) -> None:
    """After Ctrl-C, `backfill status` said `running` while no worker was left: it says
    `interrupted` (no live worker) and how to go on; the command itself said nothing."""
    seed_legacy(db.engine, db.settings, 5_000, seed=5)
    proc = subprocess.Popen(
        [UNISTATUS, "--database-url", db.url, "backfill", "--batch-size", "200"]
        + ["--max-rows-per-second", "1000", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while proc.poll() is None and _done(db) < 400 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "interrupted" in err and "unistatus backfill" in err, err
    status = as_json(cli(db.url, "backfill", "status", "--json"))
    states = {s: p["state"] for s, p in status["systems"].items() if not p["complete"]}
    assert states and set(states.values()) == {"interrupted"}, status
    # A worker that has not said it ended, silent for 20 s (in a long batch, say): not
    # taken for ended.
    from datetime import timedelta

    from unistatus.clock import utcnow
    from unistatus.db.tables_backfill import backfill_workers

    with db.engine.begin() as conn:
        then = utcnow() - timedelta(seconds=20)
        conn.execute(
            sa.insert(backfill_workers).values(
                worker="other-host:1",
                state="running",
                batch_rows=1000,
                started_at=then,
                updated_at=then,
            )
        )
    assert "interrupted" not in {p["state"] for p in progress(db.engine, db.settings).values()}
    with db.engine.begin() as conn:
        conn.execute(sa.delete(backfill_workers).where(backfill_workers.c.worker == "other-host:1"))
    again = as_json(cli(db.url, "backfill", "--json"))
    assert again["complete"] and again["inserted"] == 5_000


def test_status_of_a_job_no_worker_runs_gives_no_rate_or_eta(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backfill status` after Ctrl-C showed "rows/s 2,800, eta 17 s" (`--json`:
    "rows_per_second": 2800.0, "eta_seconds": 17.1) under a footer saying no worker ran
    (found by a probe): null in --json, and the table says why it has none."""
    monkeypatch.setattr(sys.modules["unistatus.backfill.progress"], "RATE_WINDOW_SECONDS", 3600.0)
    seed_legacy(db.engine, db.settings, 300, seed=5)
    interrupted_job(db)
    status = as_json(cli(db.url, "backfill", "status", "--json"))
    cashout = status["systems"]["CASHOUT"]
    assert cashout["state"] == "interrupted" and 0 < cashout["done"] < cashout["total"]
    assert status["workers"] == []
    for p in status["systems"].values():
        assert p["rows_per_second"] is None and p["eta_seconds"] is None, p
    text = cli(db.url, "backfill", "status")
    assert text.exit_code == 0, text.output
    (row,) = [line for line in text.stdout.splitlines() if line.startswith("│ cashout ")]
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[:2] == ["cashout", "interrupted"] and cells[5:7] == ["-", "-"], row
    said = " ".join(text.stdout.split())  # as one line, however the console wrapped it
    assert "cashout, escrow, exchange: no current rate or ETA: no worker running" in said, said
    assert "run `unistatus backfill` again to go on" in said, said
    # Paused, the next backfill waits for `backfill resume`: the advice says so (a review).
    assert cli(db.url, "backfill", "pause", "--reason", "peak hours").exit_code == 0
    said = " ".join(cli(db.url, "backfill", "status").stdout.split())
    assert "paused: run `unistatus backfill resume`, then `unistatus backfill`" in said, said


def test_a_pause_with_no_backfill_running_says_the_next_one_will_wait(db: Any) -> None:
    """`backfill pause` with nothing running said "workers hold before their next batch",
    and the next `unistatus backfill` then waited (runbook, exploratory review): the
    pause is kept; it says so, and --json says whether a backfill is running."""
    seed_legacy(db.engine, db.settings, 30, seed=3)
    done = cli(db.url, "backfill", "pause", "--reason", "peak hours")
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "no backfill is running" in said and "backfill resume" in said, said
    data = as_json(cli(db.url, "backfill", "pause", "--reason", "again", "--json"))
    assert data["running"] is False


def test_a_backfill_in_legacy_only_without_capture_is_warned_of(sqlite_db: Any) -> None:
    """Nothing writes unified in LEGACY_ONLY: a row changed after its copy goes stale
    (found by a probe: the backfill ran in phase 0 without a word)."""
    from typer.testing import CliRunner

    from unistatus.cli import app
    from unistatus.sim.seed import seed_legacy

    seed_legacy(sqlite_db.engine, sqlite_db.settings, 30, seed=1)
    done = CliRunner().invoke(app, ["--database-url", sqlite_db.url, "backfill", "--json"])
    assert done.exit_code == 0, done.output
    said = " ".join(done.stderr.split())
    assert "cashout, escrow, exchange in LEGACY_ONLY: nothing writes unified" in said, said
