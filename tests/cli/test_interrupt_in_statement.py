"""Ctrl-C that lands while a statement is in flight (psycopg waiting for its result):
still an interruption, said as one, never a failure of the entity or batch in hand."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import pytest
import sqlalchemy as sa

from support.slow_statement import (
    in_statement,
    slow_inserts,
    start,
    start_interrupted_after_send,
    the_interruption_line,
    wait_for,
)
from unistatus.backfill import run_backfill
from unistatus.db.tables import unified_transactions as U
from unistatus.sim.seed import seed_legacy


def _entities_to_repair(pg: Any) -> int:
    """400 cashouts backfilled, then every other unified row deleted (missing_unified):
    the unified rows left."""
    seed_legacy(pg.engine, pg.settings, 400, seed=4)
    run_backfill(pg.engine, pg.settings)
    with pg.engine.begin() as conn:
        conn.execute(sa.delete(U).where(U.c.legacy_id % 2 == 0))  # missing_unified
    return pg.count("unified_transactions")


def _repair_was_interrupted(
    pg: Any, before: int, proc: subprocess.Popen[str], out: str, err: str
) -> None:
    """`repair --json` ended as an interruption after 50 entities: exit 130, its one
    line, the report marked and nothing counted as failed (the one in hand rolled back)."""
    repaired = pg.count("unified_transactions") - before
    line = the_interruption_line(proc, out, err)
    assert "unistatus repair" in line, line
    report = json.loads(out)
    assert report["interrupted"] is True, report
    assert report["failed"] == 0 and report["errors"] == [], report
    assert repaired == 50, repaired
    assert repaired <= report["repaired"] <= repaired + 1, (report["repaired"], repaired)


@pytest.mark.postgres
def test_ctrl_c_inside_a_repair_statement_is_an_interruption(pg: Any) -> None:
    """Seen once under load: Ctrl-C of `repair --json` exited 1, "repair failed:
    CASHOUT:110: sending query failed: another command is already in progress", the
    run gone on: the interrupt that landed inside an INSERT was taken for the entity's
    failure. It is the run's interruption: exit 130, its one line, the report marked."""
    before = _entities_to_repair(pg)
    with slow_inserts(pg.engine, "unified_transactions", after=before + 50):
        proc = start(pg.url, "repair", "--strategy", "legacy_wins", "--reason", "t", "--json")
        try:
            wait_for(proc, in_statement(pg.engine, "repair"), "inside the slow INSERT")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    _repair_was_interrupted(pg, before, proc, out, err)


@pytest.mark.postgres
def test_ctrl_c_between_sending_a_repair_statement_and_its_result(pg: Any) -> None:
    """The same, the interrupt landing after psycopg sent the entity's first statement
    (the mode lock, run on the driver's cursor) and before it read the result: the
    connection left mid-command was rolled back, "another command is already in
    progress" replaced the interrupt, counted as the entity's failure, the run went on."""
    before = _entities_to_repair(pg)
    proc = start_interrupted_after_send(
        pg.url,
        "pg_advisory_xact_lock_shared",
        51,
        *("repair", "--strategy", "legacy_wins", "--reason", "t", "--json"),
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    _repair_was_interrupted(pg, before, proc, out, err)


# Each long command, interrupted right after psycopg sent a statement of its work (the
# nth naming the table it reads or writes) and before reading the result.
OTHERS = {
    "backfill": (["backfill", "--batch-size", "50", "--json"], "unified_transactions", 6),
    # Its mode lock runs on the driver's cursor, as repair's does.
    "backfill --retry-quarantine": (
        ["backfill", "--retry-quarantine", "--json"],
        "pg_advisory_xact_lock_shared",
        1,
    ),
    "check": (["check", "--json"], "unified_transactions", 3),
    "archive export": (["archive", "export", "--json"], "DECLARE", 1),
}


@pytest.mark.postgres
@pytest.mark.parametrize("command", sorted(OTHERS))
def test_ctrl_c_between_sending_a_statement_and_its_result(
    pg: Any, command: str, tmp_path: Any
) -> None:
    """`backfill`, `check`, `archive export`: an interrupt between sending a statement
    of their work and reading its result is the command's interruption, said as one
    (exit 130). `backfill --retry-quarantine` exited 2 instead, "error: cannot retry
    the quarantine of CASHOUT: sending query failed: another command is already in
    progress"."""
    args, text, nth = OTHERS[command]
    seed_legacy(pg.engine, pg.settings, 600, seed=4)
    if not command.startswith("backfill"):
        run_backfill(pg.engine, pg.settings)
    if command == "archive export":
        args = [*args, "--out", str(tmp_path / "archive")]
    out, _ = _interrupted_once(pg, text, nth, args)
    assert json.loads(out)["interrupted"] is True, out


def _interrupted_once(pg: Any, text: str, nth: int, args: list[str]) -> tuple[str, str]:
    """The command, interrupted after sending the ``nth`` statement containing ``text``,
    ended as an interruption: exit 130, one line saying so and no traceback on stderr.
    Its stdout, and that line."""
    proc = start_interrupted_after_send(pg.url, text, nth, *args)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    line = the_interruption_line(proc, out, err)
    assert "Traceback" not in err, err
    return out, line


# Commands interrupted right after psycopg sent their first look at the installation
# (its revision), before any of them reached the work that says what it kept.
BEFORE_THE_WORK = {
    "check": ["check", "--json"],
    "backfill": ["backfill", "--json"],
    "phase status": ["phase", "status", "--json"],
    "mode set": ["mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "t", "--json"],
}


@pytest.mark.postgres
@pytest.mark.parametrize("command", sorted(BEFORE_THE_WORK))
def test_ctrl_c_before_a_command_reaches_its_work_is_said_too(pg: Any, command: str) -> None:
    """Ctrl-C in a command's first statements ended it with exit 130 and nothing said,
    under --json an empty stdout (Typer turns a KeyboardInterrupt no command caught into
    a silent exit 130): one line, and under --json one object marked interrupted."""
    seed_legacy(pg.engine, pg.settings, 50, seed=4)
    out, line = _interrupted_once(pg, "unistatus_alembic_version", 1, BEFORE_THE_WORK[command])
    assert "again" in line, line
    said = json.loads(out)
    assert said["interrupted"] is True and said["exit_code"] == 130, said
