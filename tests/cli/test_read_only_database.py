"""A database that refuses every write (a replica, ``default_transaction_read_only``):
each command that writes stops at the first refusal with one line that says so, exit 2,
never a statement with its parameters, a hint to upgrade the schema, or one warning per
row (found by a review: the repair warned once per entity, hundreds of lines, exit 1;
the monitor named the wrong cause)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from support.check_data import damage, populate
from support.phases import to_phase
from unistatus.cli import app


def read_only_url(db: Any) -> str:
    if db.backend == "sqlite":
        return f"sqlite:///file:{db.url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    return f"{db.url}?options=-c%20default_transaction_read_only%3Don"


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["check"], "refuses writes"),
        (["repair", "--strategy", "legacy_wins", "--reason", "t"], "refuses writes"),
        (["monitor", "--once"], "refuses writes"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_a_command_that_writes_stops_at_once_on_a_read_only_database(
    db: Any, command: list[str], says: str
) -> None:
    populate(db.engine, db.settings, 30)
    damage(db.engine, db.settings, 30)
    result = CliRunner().invoke(app, ["--database-url", read_only_url(db), *command])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert says in text, text
    assert "[SQL:" not in text and "[parameters:" not in text
    assert "upgrade the schema" not in text
    assert text.count("repair failed") == 0


@pytest.mark.parametrize(
    "command",
    [["backfill"], ["mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "t"]],
    ids=lambda v: v[0],
)
def test_the_other_commands_say_read_only_in_words(db: Any, command: list[str]) -> None:
    """`backfill` on PostgreSQL said it as SQLAlchemy wraps the driver's error: "database
    error: InternalError: (psycopg.errors.ReadOnlySqlTransaction) cannot execute INSERT
    in a read-only transaction" (exploratory DBA)."""
    populate(db.engine, db.settings, 30)
    result = CliRunner().invoke(app, ["--database-url", read_only_url(db), *command])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "read-only" in text or "readonly" in text, text
    assert "Error: (" not in text and "psycopg" not in text and "[SQL:" not in text, text


@pytest.mark.parametrize("system", [[], ["--system", "escrow"]], ids=["all", "escrow"])
def test_an_emergency_rollback_on_a_replica_says_read_only_not_replay_failed(
    db: Any, system: list[str]
) -> None:
    """On a hot standby, with nothing pending, it said "the replay failed
    (ReadOnlySqlTransaction: cannot execute UPDATE ...)" (exploratory restore test)."""
    to_phase(db.engine, 3)
    args = ["rollback", "--emergency", "--reason", "drill", *system]
    result = CliRunner().invoke(app, ["--database-url", read_only_url(db), *args])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "refuses writes" in text and "point the command at the primary" in text, text
    assert "replay failed" not in text, text


def test_the_plan_on_a_replica_drops_only_the_estimates(db: Any) -> None:
    """`plan` timed a real INSERT for the backfill's cost and failed entirely ("the
    database refuses writes"), while docs/phases.md promises it on a database that
    refuses every write (exploratory restore test)."""
    populate(db.engine, db.settings, 30)
    with db.engine.begin() as conn:  # legacy rows to copy: the backfill's cost is measured
        conn.exec_driver_sql(f"DELETE FROM {db.table('unified_transactions')}")
    url = read_only_url(db)
    result = CliRunner().invoke(app, ["--database-url", url, "plan"])
    assert result.exit_code == 0, result.output
    assert "read-only" in " ".join(result.output.split()), result.output
    result = CliRunner().invoke(app, ["--database-url", url, "plan", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert "read-only" in json.dumps(plan), plan


@pytest.mark.parametrize(
    "command",
    [
        ["tx", "create", "--type", "cashout", "--user", "4", "--amount", "5", "--currency", "USD"],
        ["tx", "update", "cashout:1", "OTP_PENDING", "--reason", "t"],
    ],
    ids=lambda v: v[1],
)
def test_a_transaction_write_on_a_replica_says_where_to_point_it(
    db: Any, command: list[str]
) -> None:
    """It said "write failed: ...cannot execute SELECT in a read-only transaction", with
    no word of the primary (exploratory restore test)."""
    to_phase(db.engine, 1)
    populate(db.engine, db.settings, 3)
    result = CliRunner().invoke(app, ["--database-url", read_only_url(db), *command])
    assert result.exit_code != 0, result.output
    text = " ".join(result.output.split())
    assert "refuses writes" in text and "at the primary" in text, text


@pytest.mark.postgres
def test_no_driver_warning_reaches_stderr_beside_the_error(pg: Any) -> None:
    """psycopg sends its batched statements in a pipeline, and warns through its own
    logger when the pipeline ends behind the refusal ("error ignored terminating
    <psycopg.Pipeline [INERROR] ...>: pipeline aborted"): with no handler of the
    program's, Python printed it raw on stderr before the command's one line (a probe).
    The command's own line says what happened; the driver's noise does not reach it."""
    populate(pg.engine, pg.settings, 30)
    done = subprocess.run(
        [sys.executable, "-m", "unistatus", "--database-url", read_only_url(pg), "check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "refuses writes" in done.stderr, done.stderr
    assert "error ignored" not in done.stderr and "Pipeline" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
