"""A command given ``--json`` that fails says so on stdout too, as one JSON object
(``error``: the error's class, ``detail``: the message, ``exit_code``), so that a script
parsing stdout is not left with nothing; the stderr line stays as it is. Without
``--json``, stdout stays empty."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app


def invoke(db: Database, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--database-url", db.url, *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_bad_since_under_json_is_one_json_object_on_stdout(sqlite_db: Database) -> None:
    code, out, err = invoke(sqlite_db, "check", "--since", "1hour", "--json")
    assert code == 2
    said = json.loads(out)
    assert said["error"] == "InputError" and said["exit_code"] == 2, said
    assert "1hour" in said["detail"]
    assert err.startswith("error:") and "1hour" in err  # the stderr line, as before


def test_resume_with_nothing_to_resume_under_json_is_one_json_object(
    sqlite_db: Database,
) -> None:
    code, out, err = invoke(sqlite_db, "check", "--resume", "--json")
    assert code == 2, (out, err)
    said = json.loads(out)
    assert set(said) == {"error", "detail", "exit_code"} and said["exit_code"] == 2
    assert said["detail"] and said["detail"] in " ".join(err.split()), (said, err)


def test_without_json_stdout_stays_empty(sqlite_db: Database) -> None:
    code, out, err = invoke(sqlite_db, "check", "--since", "1hour")
    assert code == 2 and out == "" and err.startswith("error:")


def test_a_usage_error_under_json_is_one_json_object_too(sqlite_db: Database) -> None:
    """Click's own usage errors (an unknown option, a bad value, an unknown command) are
    errors of a command given ``--json`` as much as unistatus's: a script reading stdout
    got nothing but an empty line before."""
    for args in (
        ["check", "--bogus", "--json"],
        ["backfill", "--json", "--batch-size", "abc"],
        ["--json-x", "check", "--json"],
        ["nosuchcommand", "--json"],
    ):
        code, out, err = invoke(sqlite_db, *args)
        assert code == 2, (args, out, err)
        said = json.loads(out)
        assert said["error"] == "UsageError" and said["exit_code"] == 2, (args, said)
        assert said["detail"] and "Usage:" not in said["detail"], (args, said)
        assert "Usage:" in err, (args, err)  # click's own text on stderr, as before


def test_a_usage_error_without_json_leaves_stdout_empty(sqlite_db: Database) -> None:
    code, out, err = invoke(sqlite_db, "check", "--bogus")
    assert code == 2 and out == "" and "--bogus" in err


def test_the_error_object_and_the_names_to_branch_on_are_documented() -> None:
    """Exit 2 covers bad input, bad configuration, an unreachable database and a refused
    gate alike: a CI job tells "gate not green yet" from "database down" by the object's
    ``error`` (exploratory review, automating unistatus from shell scripts). The
    top-level help and the runbook say its fields and the names a script can branch on,
    and that `phase status` exits 1 while a gate fails (the way to wait for green)."""
    from pathlib import Path

    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "400"})
    runbook = (Path(__file__).resolve().parents[2] / "docs" / "runbook.md").read_text()
    for where, text in (("--help", shown.stdout), ("docs/runbook.md", runbook)):
        flat = " ".join(text.split())
        for word in ('"error"', '"detail"', '"exit_code"', "GateError", "StorageError"):
            assert word in flat, (where, word)
        for word in ("ConfigError", "InputError", "UsageError", "PhaseMovedError"):
            assert word in flat, (where, word)
        assert "phase status" in flat and "exits 1" in flat, where


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_asks_for_debug_only_without_it(
    debug: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --debug given it still said "(re-run with --debug for details)" (a probe)."""
    import typer

    from unistatus.cli.context import abort_from

    with pytest.raises(typer.Exit):
        abort_from(ValueError("boom"), debug=debug)
    said = " ".join(capsys.readouterr().err.split())
    assert "unexpected ValueError: boom" in said
    assert ("re-run with --debug" in said) is not debug, said


def test_an_error_shows_a_control_character_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    """A config key holding an escape sequence coloured the terminal (a probe)."""
    import typer

    from unistatus.cli.context import abort

    with pytest.raises(typer.Exit):
        abort("invalid setting mapping: CASHOUT.EVIL\x1b[31mRED: unknown")
    said = capsys.readouterr().err
    assert "\x1b[31m" not in said and "EVIL\\x1b[31mRED" in said, said


@pytest.mark.postgres
def test_a_database_error_is_a_storage_error_for_scripts(scratch_pg: Any) -> None:
    """A role without a privilege unistatus needs: `check --json` said
    {"error": "ProgrammingError"}, a name outside the list scripts branch on (a probe)."""
    role = f"fsch_ro_{uuid.uuid4().hex[:8]}"
    with scratch_pg.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        conn.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        conn.exec_driver_sql(f'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO "{role}"')
    url = sa.engine.make_url(scratch_pg.url).set(username=role).render_as_string(False)
    try:
        result = CliRunner().invoke(app, ["--database-url", url, "check", "--json"])
        assert result.exit_code == 2, result.output
        said = json.loads(result.stdout)
        assert said["error"] == "StorageError", said
        assert "permission denied" in said["detail"], said
    finally:
        scratch_pg.engine.dispose()
        with scratch_pg.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
