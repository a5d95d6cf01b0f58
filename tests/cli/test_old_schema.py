"""A database an older release made, not yet upgraded (`unistatus init`): this release's
commands refuse it before acting, naming the revisions and the way on, instead of
misreading its state (its phase and mode are under the older keys) or failing on a
table it lacks; `diagnose` reports it; a revision newer than this release knows is said
as such (an older release meeting a newer database).

The old database is made with this release's migrations upgraded to 0012 only (the
revision before per-system modes and phases), then put in phase 1 as that release did:
the global ``mode`` and ``phase`` keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from conftest import _drop_database, _throwaway_database
from unistatus.config import load_settings
from unistatus.db import schema
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine
from unistatus.errors import ConfigError
from unistatus.migration.phases import advance

runner = CliRunner()
OLD = "0012"
REFUSAL = (
    f"needs the schema at revision {schema.INSTALL_REVISION} (it is at {OLD}): run `unistatus init`"
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A database at revision 0012 in phase 1 (DUAL_WRITE_LEGACY_PRIMARY), as the
    release of 0012 left it."""
    monkeypatch.delenv("UNISTATUS_DATABASE_URL", raising=False)
    monkeypatch.delenv("UNISTATUS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    admin = name = None
    if request.param == "postgres":
        request.getfixturevalue("postgres_url")
        admin, url, name = _throwaway_database("_old")
    else:
        url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    try:
        assert schema.upgrade(engine, load_settings(database_url=url), OLD) == OLD
        with engine.begin() as conn:
            for key, value in (("mode", "DUAL_WRITE_LEGACY_PRIMARY"), ("phase", "1")):
                conn.execute(
                    sa.text(
                        "INSERT INTO unistatus_control (key, value, updated_at, updated_by) "
                        "VALUES (:k, :v, CURRENT_TIMESTAMP, 'old release')"
                    ),
                    {"k": key, "v": value},
                )
        yield url
    finally:
        engine.dispose()
        if admin is not None and name is not None:
            _drop_database(admin, name)


def run(url: str, *args: str) -> Result:
    return runner.invoke(
        app_cli(), ["--database-url", url, *args], env={"COLUMNS": "400"}, catch_exceptions=False
    )


def app_cli() -> Any:
    from unistatus.cli import app

    return app


def control_state(url: str) -> list[tuple[Any, ...]]:
    """Every control value and logged change: what a refused command must not touch."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            values = conn.execute(
                sa.text("SELECT key, value FROM unistatus_control ORDER BY key")
            ).all()
            logged = conn.execute(sa.text("SELECT count(*) FROM unistatus_control_log")).scalar()
        return [tuple(row) for row in values] + [("log", logged)]
    finally:
        engine.dispose()


COMMANDS = [
    ("mode", "set", "LEGACY_ONLY", "--reason", "upgrade test"),
    ("phase", "advance", "--reason", "upgrade test"),
    ("phase", "rollback", "--reason", "upgrade test"),
    ("rollback", "--emergency", "--reason", "upgrade test"),
    ("phase", "status"),
    ("mode", "get"),
    ("check",),
    ("backfill",),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_command_refuses_a_database_not_yet_upgraded(old_url: str, command: tuple[str]) -> None:
    before = control_state(old_url)
    result = run(old_url, *command)
    assert result.exit_code == 2, result.output
    err = " ".join(result.stderr.split())
    assert err.startswith("error:") and REFUSAL in err, err
    assert control_state(old_url) == before  # nothing changed


def test_the_library_refuses_to_switch_the_mode_or_phase_of_an_old_schema(old_url: str) -> None:
    before = control_state(old_url)
    engine = create_engine(old_url)
    settings = load_settings(database_url=old_url)
    try:
        with pytest.raises(ConfigError, match="needs the schema at revision"):
            set_mode(engine, "LEGACY_ONLY", reason="upgrade test", settings=settings)
        with pytest.raises(ConfigError, match="needs the schema at revision"):
            advance(engine, settings, actor="test", reason="upgrade test", force=True)
    finally:
        engine.dispose()
    assert control_state(old_url) == before


def test_diagnose_reports_a_database_not_yet_upgraded(old_url: str) -> None:
    result = run(old_url, "diagnose", "--out", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    finding = (
        f"schema at revision {OLD}, this release needs {schema.INSTALL_REVISION}: "
        "run `unistatus init`"
    )
    assert report["versions"]["schema_finding"] == finding, report["versions"]


def test_after_init_the_commands_run(old_url: str) -> None:
    upgraded = run(old_url, "init")
    assert upgraded.exit_code == 0, upgraded.output
    status = run(old_url, "mode", "get")
    assert status.exit_code == 0 and status.stdout.strip() == "DUAL_WRITE_LEGACY_PRIMARY"


NEWER = (
    "the database was upgraded by a newer unistatus (revision 0099); this release knows "
    f"revisions up to {schema.INSTALL_REVISION}: use the newer release"
)


@pytest.mark.parametrize("command", [("init",), ("mode", "get"), ("phase", "status")])
def test_a_database_a_newer_release_upgraded_is_refused_saying_so(
    old_url: str, command: tuple[str]
) -> None:
    """An older release meeting a newer database: the revision it does not know named,
    and the way on (Alembic's own "Can't locate revision identified by ..." was all)."""
    assert run(old_url, "init").exit_code == 0
    engine = create_engine(old_url)
    try:
        with engine.begin() as conn:  # what a newer release's `init` left
            conn.execute(sa.text("UPDATE unistatus_alembic_version SET version_num = '0099'"))
    finally:
        engine.dispose()
    result = run(old_url, *command)
    assert result.exit_code == 2, result.output
    assert " ".join(result.stderr.split()) == f"error: {NEWER}"
    report = json.loads(run(old_url, "diagnose", "--out", "-").stdout)
    assert report["versions"]["schema_finding"] == NEWER


def test_the_revisions_known_without_alembic_are_alembics() -> None:
    """The schema check reads the revisions this release knows from the migration files'
    names (no Alembic at a command's start): the same as Alembic's."""
    from alembic.script import ScriptDirectory

    from unistatus.db.revisions import known_revisions
    from unistatus.version import SCHEMA_REVISION

    scripts = ScriptDirectory(str(schema.MIGRATIONS))
    assert known_revisions() == {s.revision for s in scripts.walk_revisions()}
    assert SCHEMA_REVISION == schema.INSTALL_REVISION == schema.head_revisions()[0]


def test_the_library_check_and_backfill_refuse_an_old_schema(old_url: str) -> None:
    """run_check and run_backfill say why (not "no such table: unistatus_check_runs")."""
    from unistatus.backfill import run_backfill
    from unistatus.migration.check import run_check

    engine = create_engine(old_url)
    settings = load_settings(database_url=old_url)
    try:
        with pytest.raises(ConfigError, match="^check needs the schema at revision"):
            run_check(engine, settings)
        with pytest.raises(ConfigError, match="^backfill needs the schema at revision"):
            run_backfill(engine, settings)
    finally:
        engine.dispose()
