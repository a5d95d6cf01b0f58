"""A database that refuses every write (a replica, ``default_transaction_read_only``):
each command that writes stops at the first refusal with one line that says so, exit 2,
never a statement with its parameters, a hint to upgrade the schema, or one warning per
row (found by a review: the repair warned once per entity, hundreds of lines, exit 1;
the monitor named the wrong cause)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from support.check_data import damage, populate
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
