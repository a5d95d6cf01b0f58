"""The default layout names unistatus's tables bare and says they are in ``public`` (the
``schema`` setting's default): a role whose ``search_path`` finds another schema first
must not install or use a second set of them there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database, _drop_database, _throwaway_database
from support.roles import a_role_without_read_all_stats
from unistatus.adapter.core import DualWriteAdapter
from unistatus.cli import app
from unistatus.config import load_settings
from unistatus.db.engine import create_engine
from unistatus.errors import ConfigError

pytestmark = pytest.mark.postgres

runner = CliRunner()


@contextmanager
def _a_schema_of_the_roles(db: Database) -> Iterator[str]:
    """A schema of the application's own (as "$user" in the default search_path finds
    one named after the role), dropped after the test."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")


def _with_search_path(db: Database, path: str) -> str:
    url = sa.engine.make_url(db.url).update_query_dict({"options": f"-c search_path={path}"})
    return url.render_as_string(hide_password=False)


def _tables_in(db: Database, schema: str) -> int:
    with db.engine.connect() as conn:
        q = "SELECT count(*) FROM pg_tables WHERE schemaname = :s"
        return int(conn.execute(sa.text(q), {"s": schema}).scalar_one())


def test_init_refuses_a_search_path_that_finds_another_schema_first(pg: Database) -> None:
    """It installed a second set of tables in the role's own schema, and every command of
    that role used them: an operator's mode switch or rollback in one installation while
    the adapters of another role read the other."""
    with _a_schema_of_the_roles(pg) as own:
        url = _with_search_path(pg, own)
        done = runner.invoke(app, ["--database-url", url, "init"])
        assert done.exit_code == 2, done.output
        said = " ".join(done.output.split())
        assert "installed in schema public" in said and f"search_path ({own})" in said
        assert _tables_in(pg, own) == 0, "a second installation was made"


def test_every_command_refuses_it_rather_than_say_nothing_is_installed(pg: Database) -> None:
    with _a_schema_of_the_roles(pg) as own:
        done = runner.invoke(app, ["--database-url", _with_search_path(pg, own), "mode", "get"])
        assert done.exit_code == 2, done.output
        assert "search_path" in done.output and "run `unistatus init`" not in done.output


def test_an_installation_the_search_path_does_not_reach_is_named(pg: Database) -> None:
    url = _with_search_path(pg, "no_such_schema")
    for command in (["init"], ["mode", "get"]):
        done = runner.invoke(app, ["--database-url", url, *command])
        assert done.exit_code == 2, done.output
        said = " ".join(done.output.split())
        assert "installed in schema public" in said and "does not reach" in said


def test_a_migration_where_the_installation_is_found_but_not_first_is_refused(
    pg: Database,
) -> None:
    """Found through the search_path but not first: a migration would create its new
    tables in the first schema and alter the old ones in public, one installation in
    two schemas."""
    with _a_schema_of_the_roles(pg) as own:
        done = runner.invoke(
            app, ["--database-url", _with_search_path(pg, f"{own},public"), "init"]
        )
        assert done.exit_code == 2, done.output
        said = " ".join(done.output.split())
        assert (
            f"installed in schema public, but a migration would create its new objects in {own}"
            in said
        )
        assert "put public first" in said
        assert _tables_in(pg, own) == 0


@pytest.fixture
def blank_database() -> Iterator[Database]:
    admin, url, name = _throwaway_database("_search_path")
    engine = create_engine(url)
    try:
        yield Database("postgres", url, engine, load_settings(database_url=url))
    finally:
        engine.dispose()
        _drop_database(admin, name)


def test_a_new_installation_goes_to_public_or_nowhere(blank_database: Database) -> None:
    """A role with a schema of its own first in its search_path: a first init would
    have installed there, unseen by every other role."""
    db = blank_database
    with _a_schema_of_the_roles(db) as own:
        done = runner.invoke(
            app, ["--database-url", _with_search_path(db, f"{own},public"), "init"]
        )
        assert done.exit_code == 2, done.output
        said = " ".join(done.output.split())
        assert f"would create its tables in schema {own}" in said
        assert f'set schema = "{own}"' in said and "put public first" in said
        assert _tables_in(db, own) == 0 and _tables_in(db, "public") == 0
    done = runner.invoke(app, ["--database-url", _with_search_path(db, "no_such_schema"), "init"])
    assert done.exit_code == 2 and "put public in the role's search_path" in done.output
    done = runner.invoke(app, ["--database-url", _with_search_path(db, '"$user",public'), "init"])
    assert done.exit_code == 0, done.output
    assert _tables_in(db, "public") > 0


def test_the_library_refuses_it_too(pg: Database) -> None:
    with _a_schema_of_the_roles(pg) as own:
        url = _with_search_path(pg, own)
        with pytest.raises(ConfigError, match="search_path"):
            DualWriteAdapter(url, settings=pg.settings.model_copy(update={"database_url": url}))


def test_public_later_in_the_search_path_but_first_to_exist_is_fine(pg: Database) -> None:
    """PostgreSQL's own default, ``"$user", public``, with no schema named after the role:
    the tables are found in public, as always."""
    url = _with_search_path(pg, '"$user",public')
    done = runner.invoke(app, ["--database-url", url, "mode", "get"])
    assert done.exit_code == 0, done.output


def test_an_installation_in_a_schema_the_role_may_not_use_says_so(pg: Database) -> None:
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("REVOKE USAGE ON SCHEMA public FROM PUBLIC")
    try:
        with a_role_without_read_all_stats(pg) as url:
            done = runner.invoke(app, ["--database-url", url, "mode", "get"])
        assert done.exit_code == 2, done.output
        said = " ".join(done.output.split())
        assert "which this role may not use (no USAGE privilege on it)" in said
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("GRANT USAGE ON SCHEMA public TO PUBLIC")


def test_the_adapter_and_serve_name_an_installation_the_schema_setting_misses(
    pg_schema: Database, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Installed in schema "unistatus", the config without `schema = "unistatus"`: every
    command said where the installation is, but the library adapter started and then
    failed each write ("cannot read the mode: relation unistatus_control does not
    exist"), and `serve` started a service answering 503, its log saying "run `unistatus
    init`" (exploratory review)."""
    monkeypatch.delenv("UNISTATUS_SCHEMA")
    url = pg_schema.url
    with pytest.raises(ConfigError, match="installed in schema unistatus"):
        DualWriteAdapter(url, settings=load_settings(database_url=url))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k != "UNISTATUS_SCHEMA"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from unistatus.cli import main; main()",
             "--database-url", url, "serve", "--port", str(port), "--monitor-interval", "0"],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("serve started on a database whose installation it cannot see")
    assert done.returncode == 2, done.stderr
    assert "installed in schema unistatus" in " ".join(done.stderr.split())


def test_a_schema_setting_naming_an_empty_schema_names_the_installation(
    pg_schema: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed in "unistatus", run with UNISTATUS_SCHEMA=unistatus2 (a typo): commands
    said "run `unistatus init` first", and `init` then refused, naming the installation
    (exploratory review). They name it at once."""
    monkeypatch.setenv("UNISTATUS_SCHEMA", "unistatus2")
    for command in (["phase", "status"], ["capture", "status"]):
        done = runner.invoke(app, ["--database-url", pg_schema.url, *command])
        assert done.exit_code == 2, done.output
        said = " ".join(done.output.split())
        assert "installed in this database, in schema unistatus" in said, said
        assert "run `unistatus init` first" not in said


def test_a_second_installation_the_search_path_reaches_first_is_refused(pg: Database) -> None:
    """A second installation made on purpose (`init --alongside`, ``schema`` set to the
    role's own schema), and a process of the default layout whose role's search_path,
    PostgreSQL's default ``"$user", public``, finds that one first: it used the other
    installation's mode (LEGACY_ONLY), so its creates wrote no unified row while public's
    installation was in dual write, and public's mode switches never reached it, without
    a word (exploratory DBA). It is refused, both installations named."""
    with _a_schema_of_the_roles(pg) as own:
        made = runner.invoke(
            app, ["--database-url", pg.url, "init", "--alongside"], env={"UNISTATUS_SCHEMA": own}
        )
        assert made.exit_code == 0, made.output
        url = _with_search_path(pg, f"{own},public")
        with pytest.raises(ConfigError, match=rf"schema {own} first.*public"):
            DualWriteAdapter(url, settings=pg.settings.model_copy(update={"database_url": url}))
        done = runner.invoke(app, ["--database-url", url, "mode", "get"])
        assert done.exit_code == 2, done.output
        said = " ".join(done.output.split())
        assert f"schema {own} first" in said and "public" in said, said


def test_one_table_of_the_installation_found_elsewhere_first_is_refused(pg: Database) -> None:
    """A table of the role's own schema named like one of unistatus's (its history): the
    adapter wrote its history rows there and `tx show` showed them as the installation's
    (exploratory DBA). The process is refused, the table named."""
    with _a_schema_of_the_roles(pg) as own:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE TABLE {own}.unified_status_history (LIKE public.unified_status_history)"
            )
        url = _with_search_path(pg, f"{own},public")
        with pytest.raises(ConfigError, match=rf"unified_status_history.*schema {own}"):
            DualWriteAdapter(url, settings=pg.settings.model_copy(update={"database_url": url}))
        done = runner.invoke(app, ["--database-url", url, "tx", "show", "1"])
        assert done.exit_code == 2, done.output
        assert "unified_status_history" in done.output


def test_any_table_of_the_installation_found_elsewhere_first_is_refused(pg: Database) -> None:
    """The check named only the six tables of ``db/tables.py``: a stray idempotency-key
    or statistics table of the role's own schema was used without a word (review)."""
    with _a_schema_of_the_roles(pg) as own:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE TABLE {own}.unistatus_idempotency_keys "
                "(LIKE public.unistatus_idempotency_keys)"
            )
        url = _with_search_path(pg, f"{own},public")
        with pytest.raises(ConfigError, match=rf"unistatus_idempotency_keys.*schema {own}"):
            DualWriteAdapter(url, settings=pg.settings.model_copy(update={"database_url": url}))
        # A command of its own process, which has not loaded every table module.
        done = subprocess.run(
            [sys.executable, "-m", "unistatus", "--database-url", url, "mode", "get"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stdout
        assert "unistatus_idempotency_keys" in " ".join(done.stderr.split()), done.stderr
