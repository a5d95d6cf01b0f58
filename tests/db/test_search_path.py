"""The default layout names unistatus's tables bare and says they are in ``public`` (the
``schema`` setting's default): a role whose ``search_path`` finds another schema first
must not install or use a second set of them there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.cli import app
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
        assert "search_path" in done.output and own in done.output
        assert f'schema = "{own}"' in " ".join(done.output.split())
        assert _tables_in(pg, own) == 0, "a second installation was made"


def test_every_command_refuses_it_rather_than_say_nothing_is_installed(pg: Database) -> None:
    with _a_schema_of_the_roles(pg) as own:
        done = runner.invoke(app, ["--database-url", _with_search_path(pg, own), "mode", "get"])
        assert done.exit_code == 2, done.output
        assert "search_path" in done.output and "run `unistatus init`" not in done.output


def test_a_search_path_that_names_no_schema_is_refused(pg: Database) -> None:
    url = _with_search_path(pg, "no_such_schema")
    done = runner.invoke(app, ["--database-url", url, "init"])
    assert done.exit_code == 2, done.output
    assert "names no schema that exists" in " ".join(done.output.split())
    done = runner.invoke(app, ["--database-url", url, "mode", "get"])
    assert done.exit_code == 2, done.output
    said = " ".join(done.output.split())
    assert "are in schema public" in said and "put public in the role's search_path" in said


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
