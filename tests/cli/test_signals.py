"""How `unistatus` ends when it is told to stop or its reader leaves, run as a process:
SIGTERM (systemd, Kubernetes) as Ctrl-C, an interrupted command saying what it kept,
and `unistatus ... | head` not taken for a failed check."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import unistatus
from support.cli_run import as_json, cli
from unistatus.backfill import progress, run_backfill
from unistatus.db.tables import unified_transactions as U
from unistatus.sim.seed import seed_legacy

SRC = str(Path(unistatus.__file__).parents[1])


def _start(url: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "unistatus", "--database-url", url, *args],
        text=True,
        env=env,
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen},
    )


def _wait_for(proc: subprocess.Popen[str], ready: Any, what: str) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.02)


def _done(db: Any) -> int:
    return sum(int(p["done"]) for p in progress(db.engine, db.settings).values())


@pytest.mark.postgres
def test_sigterm_stops_a_backfill_as_ctrl_c_does(pg: Any) -> None:
    """SIGTERM (systemd, Kubernetes) ended `backfill` at once with nothing said and its
    worker rows left "running" (then "stalled"), so that `backfill undo` was refused as
    "a backfill is running": it is Ctrl-C's end, its line, its exit code (130)."""
    seed_legacy(pg.engine, pg.settings, 5_000, seed=5)
    proc = _start(pg.url, "backfill", "--batch-size", "200", "--max-rows-per-second", "1000")
    try:
        _wait_for(proc, lambda: _done(pg) >= 400, "copied 400 rows")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, err)
    assert "interrupted:" in err and "unistatus backfill" in err, err
    status = as_json(cli(pg.url, "backfill", "status", "--json"))
    states = {p["state"] for p in status["systems"].values() if not p["complete"]}
    assert states == {"interrupted"}, status
    undone = cli(pg.url, "backfill", "undo", "--reason", "start again", "--json")
    assert undone.exit_code == 0, undone.output


def test_sigterm_stops_monitor_as_ctrl_c_does(sqlite_db: Any) -> None:
    """A live view stopped by SIGTERM ends as Ctrl-C ends it: "monitor stopped", exit 0."""
    proc = _start(sqlite_db.url, "monitor", "--interval", "60")
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first evaluation: now in its sleep
        assert "rules" in first, first
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, (proc.returncode, out, err)
    assert "monitor stopped" in out, out


def test_sigterm_stops_serve_at_once_and_as_ctrl_c_does(sqlite_db: Any, tmp_path: Path) -> None:
    """`serve` took ~10 s to die of SIGTERM (exit -15): it shuts down as on Ctrl-C, exit 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    proc = _start(sqlite_db.url, "serve", "--port", str(port), "--monitor-interval", "0")

    def health() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return True
        except OSError:
            return False

    try:
        _wait_for(proc, health, "served /health")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        waited = time.monotonic() - started
    finally:
        proc.kill()
    assert proc.returncode == 0, (proc.returncode, err)
    assert waited < 5, f"SIGTERM took {waited:.1f} s"
    assert "Traceback" not in err, err


def test_a_reader_that_left_is_no_failure(db: Any) -> None:
    """`unistatus check | head -3` on a consistent database exited 1, "a check found a
    problem" (Rich's own broken-pipe exit): a reader that left ends the command with 0,
    without a word, whatever the command and its output (Rich's or --json's)."""
    seed_legacy(db.engine, db.settings, 30, seed=2)
    run_backfill(db.engine, db.settings)
    with db.engine.connect() as conn:
        some_id = conn.execute(sa.select(U.c.id).limit(1)).scalar_one()
    commands = [
        ["mapping"],
        ["phase", "status", "--system", "cashout"],
        ["check"],
        ["check", "--json"],
        ["tx", "show", str(some_id)],
    ]
    for command in commands:
        read, write = os.pipe()
        os.close(read)  # the reader has left before the first line
        try:
            proc = _start(db.url, *command, stdout=write)
        finally:
            os.close(write)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (command, proc.returncode, err)
        assert "Traceback" not in err and "Exception ignored" not in err, (command, err)
