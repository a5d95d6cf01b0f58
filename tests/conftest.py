"""Fixtures: one suite, run against SQLite and a real PostgreSQL.

PostgreSQL comes from ``UNISTATUS_TEST_POSTGRES_URL`` (default: the local server). Each
run creates a throwaway database and drops it at the end; every test starts from empty
tables. Without a server the PostgreSQL tests skip loudly, except under ``CI=true``,
where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from unistatus.adapter.stats import close_all as close_statistics
from unistatus.config import Settings, load_settings
from unistatus.db import schema
from unistatus.db.engine import create_engine
from unistatus.domain import mapping
from unistatus.domain.statuses import LegacySystemType

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class Database:
    """A migrated, empty database for one test."""

    backend: str
    url: str
    engine: sa.Engine
    settings: Settings

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway database on the server, created for this run and dropped after."""
    server = sa.engine.make_url(_server_url())
    name = f"unistatus_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable(str(exc.orig).strip().splitlines()[0])
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def _postgres_migrated(postgres_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(postgres_url)
    schema.upgrade(engine, load_settings(database_url=postgres_url))
    yield engine
    engine.dispose()


def _truncate_all(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        names = [n for n in sa.inspect(conn).get_table_names() if n != schema.VERSION_TABLE]
        if names:
            quoted = ", ".join(f'"{n}"' for n in names)
            conn.exec_driver_sql(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")


def make_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Database:
    path = tmp_path_factory.mktemp("db") / "unistatus.db"
    url = f"sqlite:///{path}"
    settings = load_settings(database_url=url)
    engine = create_engine(url)
    schema.upgrade(engine, settings)
    return Database("sqlite", url, engine, settings)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """An empty, migrated database on each backend."""
    if request.param == "sqlite":
        database = make_sqlite(tmp_path_factory)
        yield database
        database.engine.dispose()
        return
    engine = request.getfixturevalue("_postgres_migrated")
    url = request.getfixturevalue("postgres_url")
    _truncate_all(engine)
    yield Database("postgres", url, engine, load_settings(database_url=url))


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> Database:
    """PostgreSQL only (for concurrency tests): an empty, migrated database."""
    engine = request.getfixturevalue("_postgres_migrated")
    url = request.getfixturevalue("postgres_url")
    _truncate_all(engine)
    return Database("postgres", url, engine, load_settings(database_url=url))


@pytest.fixture
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database = make_sqlite(tmp_path_factory)
    yield database
    database.engine.dispose()
