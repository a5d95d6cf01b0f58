"""Ctrl-C that lands while a statement is in flight (psycopg waiting for its result):
still an interruption, said as one, never a failure of the entity or batch in hand."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest
import sqlalchemy as sa

from support.slow_statement import (
    in_statement,
    slow_inserts,
    start,
    start_interrupted_after_send,
    wait_for,
)
from unistatus.backfill import run_backfill
from unistatus.db.tables import unified_transactions as U
from unistatus.sim.seed import seed_legacy


@pytest.mark.postgres
def test_ctrl_c_inside_a_repair_statement_is_an_interruption(pg: Any) -> None:
    """Seen once under load: Ctrl-C of `repair --json` exited 1, "repair failed:
    CASHOUT:110: sending query failed: another command is already in progress", the
    run gone on: the interrupt that landed inside an INSERT was taken for the entity's
    failure. It is the run's interruption: exit 130, its one line, the report marked."""
    seed_legacy(pg.engine, pg.settings, 400, seed=4)
    run_backfill(pg.engine, pg.settings)
    with pg.engine.begin() as conn:
        conn.execute(sa.delete(U).where(U.c.legacy_id % 2 == 0))  # missing_unified
    before = pg.count("unified_transactions")
    with slow_inserts(pg.engine, "unified_transactions", after=before + 50):
        proc = start(pg.url, "repair", "--strategy", "legacy_wins", "--reason", "t", "--json")
        try:
            wait_for(proc, in_statement(pg.engine, "repair"), "inside the slow INSERT")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    repaired = pg.count("unified_transactions") - before
    assert proc.returncode == 130, (proc.returncode, out, err)
    lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, err
    assert "unistatus repair" in lines[0], lines[0]
    report = json.loads(out)
    assert report["interrupted"] is True, report
    assert report["failed"] == 0 and report["errors"] == [], report
    assert repaired == 50, repaired  # the one in hand rolled back
    assert repaired <= report["repaired"] <= repaired + 1, (report["repaired"], repaired)


@pytest.mark.postgres
def test_ctrl_c_between_sending_a_repair_statement_and_its_result(pg: Any) -> None:
    """The same, the interrupt landing after psycopg sent the entity's first statement
    (the mode lock, run on the driver's cursor) and before it read the result: the
    connection left mid-command was rolled back, "another command is already in
    progress" replaced the interrupt, counted as the entity's failure, the run went on."""
    seed_legacy(pg.engine, pg.settings, 400, seed=4)
    run_backfill(pg.engine, pg.settings)
    with pg.engine.begin() as conn:
        conn.execute(sa.delete(U).where(U.c.legacy_id % 2 == 0))  # missing_unified
    before = pg.count("unified_transactions")
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
    repaired = pg.count("unified_transactions") - before
    assert proc.returncode == 130, (proc.returncode, out, err)
    lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, err
    assert "unistatus repair" in lines[0], lines[0]
    report = json.loads(out)
    assert report["interrupted"] is True, report
    assert report["failed"] == 0 and report["errors"] == [], report
    assert repaired == 50, repaired
    assert repaired <= report["repaired"] <= repaired + 1, (report["repaired"], repaired)
