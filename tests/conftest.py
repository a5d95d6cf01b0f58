"""Fixtures: one suite, run against SQLite and a real PostgreSQL.

PostgreSQL comes from ``UNISTATUS_TEST_POSTGRES_URL`` (default: the local server). Each
run creates a throwaway database and drops it at the end; every test starts from empty
tables. Without a server the PostgreSQL tests skip loudly, except under ``CI=true``,
where they fail.

``IN_EVERY_LAYOUT`` / ``PG_IN_EVERY_LAYOUT`` add a layout to a test: PostgreSQL with
unistatus's tables in a schema of their own (``schema = "unistatus"``, the legacy tables
in public), in a throwaway database of its own where public holds nothing of ours, so a
statement that forgets the schema fails instead of passing on the wrong tables.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support import shared_database
from unistatus.adapter.stats import close_all as close_statistics
from unistatus.config import DEFAULT_SCHEMA, Settings, load_settings
from unistatus.db import schema
from unistatus.db.binding import schema_of
from unistatus.db.catalog import metadata, qualified_name
from unistatus.db.engine import create_engine
from unistatus.domain import mapping
from unistatus.domain.statuses import LegacySystemType

# Fixtures kept in support modules: a real browser for the web dashboard tests.
pytest_plugins = ["support.browser"]

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
OWN_SCHEMA = "unistatus"  # where the schema layout keeps unistatus's tables

# The commands run as under a pipe, whatever terminal started the suite: no COLUMNS or
# LINES from it (an exported COLUMNS=80, or pytest-xdist's workers, cut the tables of
# `tx show` and wrapped the commands printed to paste). A test wanting a width says so.
for _variable in ("COLUMNS", "LINES"):
    os.environ.pop(_variable, None)


@dataclass
class Database:
    """A migrated, empty database for one test."""

    backend: str
    url: str
    engine: sa.Engine
    settings: Settings

    @property
    def app_engine(self) -> sa.Engine:
        """The database as an application's own engine sees it: without unistatus's
        schema (the same pool). A caller's connection comes from here, as in production."""
        if schema_of(self.engine) is None:
            return self.engine
        return self.engine.execution_options(schema_translate_map={})

    def table(self, name: str) -> str:
        """A table's name for SQL text: ours qualified with their schema, others bare."""
        return qualified_name(name, self.engine) if name in metadata.tables else name

    def scalar(self, sql: str, **params: Any) -> Any:
        """The one value ``sql`` (text, ``:name`` parameters) selects."""
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar_one()

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            q = f"SELECT count(*) FROM {self.table(table)}"
            return int(conn.execute(sa.text(q)).scalar_one())


def _server_url() -> str:
    return os.environ.get("UNISTATUS_TEST_POSTGRES_URL", DEFAULT_PG)


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL unavailable ({_server_url()}): {reason}"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(f"SKIPPING POSTGRESQL TESTS: {message}")


@pytest.fixture(autouse=True)
def _statistics_end_with_the_test() -> Iterator[None]:
    """Every adapter records statistics; each test ends as a process would: flushed.

    The adapters' shared recorders are flushed and their flusher threads stopped, so no
    count recorded in one test lands in the next one's tables, and no thread outlives it.
    """
    yield
    close_statistics()


@pytest.fixture(autouse=True)
def _extra_statuses_end_with_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """Extra legacy values a test's settings register (a process-wide registration, see
    docs/status-model.md) are gone after it, as if each test were its own process."""
    for system in LegacySystemType:
        monkeypatch.setitem(mapping._FORWARD_STR, system, mapping._FORWARD_STR[system])


def _throwaway_database(tag: str) -> tuple[sa.Engine, str, str]:
    """(admin engine, URL, name) of a new database on the server, for this run."""
    server = sa.engine.make_url(_server_url())
    name = f"unistatus_test_{os.getpid()}_{uuid.uuid4().hex[:6]}{tag}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable(str(exc.orig).strip().splitlines()[0])
    return admin, server.set(database=name).render_as_string(hide_password=False), name


def _drop_database(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway database on the server, created for this run and dropped after."""
    admin, url, name = _throwaway_database("")
    try:
        yield url
    finally:
        _drop_database(admin, name)


@pytest.fixture(scope="session")
def _postgres_migrated(postgres_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(postgres_url)
    schema.upgrade(engine, load_settings(database_url=postgres_url, schema=DEFAULT_SCHEMA))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _postgres_schema_migrated() -> Iterator[sa.Engine]:
    """Another throwaway database, installed with ``schema = "unistatus"``."""
    admin, url, name = _throwaway_database("_schema")
    engine = create_engine(url, schema=OWN_SCHEMA)
    try:
        schema.upgrade(engine, load_settings(database_url=url, schema=OWN_SCHEMA))
        yield engine
    finally:
        engine.dispose()
        _drop_database(admin, name)


def _truncate_all(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        where = [None] if schema_of(engine) is None else [None, schema_of(engine)]
        names = [
            f'"{s}"."{n}"' if s else f'"{n}"'
            for s in where
            for n in inspector.get_table_names(schema=s)
            if n != schema.VERSION_TABLE
        ]
        if names:
            conn.exec_driver_sql(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")


def make_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Database:
    """A migrated SQLite file of the test's own: a copy of one migrated once per run
    (the migrations' 22 revisions took 0.08-0.15 s per test, a thousand tests)."""
    path = tmp_path_factory.mktemp("db") / "unistatus.db"
    shutil.copyfile(_sqlite_template(tmp_path_factory), path)
    url = f"sqlite:///{path}"
    settings = load_settings(database_url=url, schema=DEFAULT_SCHEMA)
    return Database("sqlite", url, create_engine(url), settings)


_SQLITE_TEMPLATE: list[Path] = []


def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's migrated, empty SQLite file (closed: its journal folded in)."""
    if not _SQLITE_TEMPLATE:
        path = tmp_path_factory.mktemp("template") / "unistatus.db"
        url = f"sqlite:///{path}"
        engine = create_engine(url)
        schema.upgrade(engine, load_settings(database_url=url, schema=DEFAULT_SCHEMA))
        engine.dispose()
        _SQLITE_TEMPLATE.append(path)
    return _SQLITE_TEMPLATE[0]


_POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
_SCHEMA_LAYOUT = pytest.param("postgres_schema", marks=pytest.mark.postgres)
# Decorators that run a test on one more layout: PostgreSQL with unistatus's tables in a
# schema of their own (``pg_schema``). For a test taking ``db`` / ``pg``.
IN_EVERY_LAYOUT = pytest.mark.parametrize(
    "db", ["sqlite", _POSTGRES, _SCHEMA_LAYOUT], indirect=True
)
PG_IN_EVERY_LAYOUT = pytest.mark.parametrize("pg", [_POSTGRES, _SCHEMA_LAYOUT], indirect=True)


@pytest.fixture(params=["sqlite", _POSTGRES])
def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """An empty, migrated database on each backend (and each layout: IN_EVERY_LAYOUT)."""
    if request.param == "sqlite":
        database = make_sqlite(tmp_path_factory)
        yield database
        database.engine.dispose()
        return
    yield request.getfixturevalue("pg_schema" if request.param == "postgres_schema" else "pg")


def _undo_what_a_test_left(database: Database) -> list[str]:
    """Put the shared database's schema back as installed (legacy status columns in
    place, no capture trigger, nothing a test added: tests/support/shared_database.py);
    what was left otherwise."""
    from unistatus.migration import capture
    from unistatus.migration.retire import legacy_columns_dropped, undo_cleanup

    left = []
    engine, settings = database.engine, database.settings
    if legacy_columns_dropped(engine, settings):
        undo_cleanup(engine, settings, actor="tests", reason="left retired by a test")
        left.append("the legacy status columns dropped")
    with engine.connect() as conn:
        triggers, functions = capture.installed(conn)
    if triggers or functions:
        capture.disable(engine, settings, actor="tests", reason="left enabled by a test")
        left.append("the capture enabled")
    key = engine.url.render_as_string(hide_password=False)
    if key not in _INSTALLED:  # the first test on this database: as installed
        _INSTALLED[key] = shared_database.shape(engine)
    return left + shared_database.put_back(engine, _INSTALLED[key])


# Each shared database's shape as installed (tests/support/shared_database.py).
_INSTALLED: dict[str, set[shared_database.Item]] = {}


def _left_as_installed(database: Database, request: pytest.FixtureRequest) -> Iterator[Database]:
    """Yield ``database`` (empty); after the test, fail it if it left the schema changed
    (then put back for the next one). Changed already before it (by a thread that
    outlived an earlier test): put back first, with a warning."""
    patches = request.getfixturevalue("monkeypatch")
    if left := _undo_what_a_test_left(database):
        warnings.warn(f"an earlier test left {'; '.join(left)}: put back", stacklevel=1)
    _truncate_all(database.engine)
    yield database
    patches.undo()  # what the test patched (a lock's timing, a reader) is not the guard's
    try:
        left = _undo_what_a_test_left(database)
    except Exception as exc:  # e.g. a transaction of the test's still open on a table
        pytest.fail(f"the test left the database where it cannot be put back: {exc!r}")
    if left:
        pytest.fail(f"the test left {'; '.join(left)} (put back for the next tests)")


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> Iterator[Database]:
    """PostgreSQL only (for concurrency tests): an empty, migrated database (in a schema
    of its own too with PG_IN_EVERY_LAYOUT)."""
    if getattr(request, "param", "postgres") == "postgres_schema":
        yield request.getfixturevalue("pg_schema")
        return
    engine = request.getfixturevalue("_postgres_migrated")
    url = request.getfixturevalue("postgres_url")
    settings = load_settings(database_url=url, schema=DEFAULT_SCHEMA)
    yield from _left_as_installed(Database("postgres", url, engine, settings), request)


@pytest.fixture
def staging_old_revisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """This release's mode and phase writers allowed on a database at an older revision,
    for a migration test staging the state that revision's release wrote (elsewhere
    they refuse it: :func:`unistatus.db.revisions.require_current_schema`)."""
    from unistatus.db import control

    monkeypatch.setattr(control, "require_current_schema", lambda *_a, **_k: None)


@pytest.fixture
def scratch_pg(postgres_url: str) -> Iterator[Database]:
    """PostgreSQL in a database of its own, migrated, dropped after: for a test that
    changes the schema itself (its indexes, to stage a race)."""
    _ = postgres_url  # the server is reachable (else skipped, or failed under CI)
    admin, url, name = _throwaway_database("_scratch")
    engine = create_engine(url)
    settings = load_settings(database_url=url)
    try:
        schema.upgrade(engine, settings)
        yield Database("postgres", url, engine, settings)
    finally:
        engine.dispose()
        _drop_database(admin, name)


@pytest.fixture
def empty_pg(postgres_url: str) -> Iterator[str]:
    """The URL of a PostgreSQL database of its own, empty (never migrated), dropped
    after: for a test that installs into it as an operator would (a restore)."""
    _ = postgres_url  # the server is reachable (else skipped, or failed under CI)
    admin, url, name = _throwaway_database("_empty")
    try:
        yield url
    finally:
        _drop_database(admin, name)


@pytest.fixture
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database = make_sqlite(tmp_path_factory)
    yield database
    database.engine.dispose()


@pytest.fixture
def pg_schema(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Database]:
    """PostgreSQL with unistatus's tables in schema "unistatus" (legacy tables in public),
    empty. UNISTATUS_SCHEMA is set too, for what loads its settings from the environment
    (the CLI, the demo)."""
    engine = request.getfixturevalue("_postgres_schema_migrated")
    url = engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("UNISTATUS_SCHEMA", OWN_SCHEMA)
    settings = load_settings(database_url=url, schema=OWN_SCHEMA)
    yield from _left_as_installed(Database("postgres", url, engine, settings), request)
