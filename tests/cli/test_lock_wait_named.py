"""A command behind a session holding one of unistatus's tables (a migration's DDL, a
DBA's ``LOCK TABLE``): it gives up within ``lock_timeout_ms`` naming the holder, as the
adapter's writes and `serve` do, instead of waiting silently for as long as it is held.
(`mode set`: tests/db/test_mode_lock_wait.py; a retirement's gates:
tests/migration/test_ddl_lock_waits.py.)"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Database
from support.slow_statement import start
from unistatus.db.engine import create_engine

pytestmark = pytest.mark.postgres

# Each of them read the control table first thing; each waited for as long as it was
# held, saying nothing (found by hand: 12 s under `timeout`, then Ctrl-C's line).
READERS = [
    ("phase", "status"),
    ("mode", "get"),
    ("plan",),
    ("backfill", "status"),
    ("capture", "status"),
]
LOCK_TIMEOUT_MS = 300


def _ended(proc: subprocess.Popen[str], seconds: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(
            f"{proc.args[-2:]} still waiting after {seconds:g} s behind the locked table"
        ) from None


def test_read_commands_behind_a_locked_control_table_give_up_naming_the_holder(
    pg: Database, tmp_path: Path
) -> None:
    """Each gives up with one line naming the holder, exit 2; `diagnose` collects what it
    can, as it does for any section that fails, and names the holder too (its file's
    ``table_locks``, and a finding on stderr)."""
    env = {"UNISTATUS_LOCK_TIMEOUT_MS": str(LOCK_TIMEOUT_MS)}
    dba = create_engine(pg.url, application_name="dba-session")
    try:
        with dba.connect() as held:
            held.exec_driver_sql("LOCK TABLE unistatus_control IN ACCESS EXCLUSIVE MODE")
            pid = int(held.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            began = time.monotonic()
            procs = [start(pg.url, *args, env_extra=env) for args in READERS]
            procs.append(start(pg.url, "phase", "status", "--json", env_extra=env))
            diagnosed = tmp_path / "d.json"
            procs.append(start(pg.url, "diagnose", "--out", str(diagnosed), env_extra=env))
            try:
                outs = [_ended(p, max(1.0, 30 - (time.monotonic() - began))) for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:  # one left waiting: not left behind
                        p.kill()
                        p.communicate()
            took = time.monotonic() - began
            held.rollback()
    finally:
        dba.dispose()
    *said_so, (diagnose_out, diagnose_err) = outs
    assert procs[-1].returncode == 0, (diagnose_out, diagnose_err)
    finding = [line for line in diagnose_err.splitlines() if line.startswith("finding:")]
    assert len(finding) == 1, diagnose_err
    assert f"pid {pid} (dba-session" in finding[0], finding
    assert "AccessExclusiveLock on unistatus_control" in finding[0], finding
    filed = json.loads(diagnosed.read_text())
    assert [h["pid"] for h in filed["table_locks"]] == [pid], filed["table_locks"]
    assert "lock timeout" in filed["control"]["error"], filed["control"]
    for args, proc, (out, err) in zip(
        [*READERS, ("phase status --json",)], procs[:-1], said_so, strict=True
    ):
        assert proc.returncode == 2, (args, proc.returncode, out, err)
        line = err.strip()
        assert line.startswith("error:") and "\n" not in line and "LINE" not in line, (args, err)
        assert f"pid {pid} (dba-session, idle in transaction" in line, (args, line)
        assert "AccessExclusiveLock on unistatus_control" in line, (args, line)
    said = json.loads(said_so[-1][0])
    assert said["error"] == "StorageError" and said["exit_code"] == 2, said
    assert f"pid {pid}" in said["detail"], said
    # Seven processes on two cores: each is its start-up and one lock timeout, not a wait.
    assert took < 25, took
