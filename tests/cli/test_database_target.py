"""Which database a command uses, said before it fails: the default file named, a
missing or empty database refused with `unistatus init` as the way on, a connection
error naming backend, host, port, database and user but never the password."""

from __future__ import annotations

import gc
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from conftest import _drop_database, _throwaway_database
from unistatus.cli import app

runner = CliRunner()
PASSWORD = "pw-Zq81xx"


@pytest.fixture(autouse=True)
def _no_database_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A fresh working directory; no URL from the environment or a config file."""
    monkeypatch.delenv("UNISTATUS_DATABASE_URL", raising=False)
    monkeypatch.delenv("UNISTATUS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    yield


def run(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "400"}, catch_exceptions=False)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert "no such table" not in err
    return err


def test_the_default_database_is_named_and_a_missing_one_refused(tmp_path: Path) -> None:
    err = one_line_error(run("mode", "get"))
    assert "./unistatus.db" in err and "the default" in err and "--database-url" in err
    assert "unistatus init" in err
    assert not (tmp_path / "unistatus.db").exists()  # nothing created by a read

    created = run("init")
    assert created.exit_code == 0, created.output
    assert "./unistatus.db" in created.stderr and "the default" in created.stderr
    assert (tmp_path / "unistatus.db").exists()

    read = run("mode", "get")
    assert read.exit_code == 0 and read.stdout.strip() == "LEGACY_ONLY"
    assert "using the SQLite file ./unistatus.db" in read.stderr


def test_a_named_database_is_not_announced(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'named.db'}"
    assert run("--database-url", url, "init").exit_code == 0
    read = run("--database-url", url, "mode", "get")
    assert read.exit_code == 0 and read.stderr == ""


def test_a_sqlite_database_without_unistatus_tables_says_run_init(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "blank.db").close()
    err = one_line_error(run("--database-url", "sqlite:///blank.db", "phase", "status"))
    assert "./blank.db has no unistatus tables" in err and "unistatus init" in err


def test_a_postgresql_database_without_unistatus_tables_says_run_init(
    postgres_url: str,
) -> None:
    # A database of its own: an empty schema first on the search path no longer stands
    # for one (the tables in public it hides are named: tests/db/test_search_path.py).
    admin, url, name = _throwaway_database("_blank")
    try:
        err = one_line_error(run("--database-url", url, "mode", "get"))
        assert f"postgresql database '{name}'" in err
        assert "has no unistatus tables" in err and "unistatus init" in err
    finally:
        gc.collect()
        _drop_database(admin, name)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_connection_error_names_the_database_never_the_password() -> None:
    port = _closed_port()
    url = f"postgresql://alice:{PASSWORD}@127.0.0.1:{port}/payments"
    err = one_line_error(run("--database-url", url, "mode", "get"))
    assert f"postgresql database 'payments' on 127.0.0.1:{port} as 'alice'" in err
    assert "refused" in err.lower()
    assert PASSWORD not in err


def test_a_refused_login_names_the_database_never_the_password(postgres_url: str) -> None:
    server = sa.engine.make_url(postgres_url)
    url = server.set(database="no_such_db_x", password=PASSWORD)
    err = one_line_error(
        run("--database-url", url.render_as_string(hide_password=False), "tx", "show", "x:1")
    )
    assert "postgresql database 'no_such_db_x'" in err
    assert f"{server.host}:{server.port or 5432}" in err and "no_such_db_x" in err
    assert PASSWORD not in err


def test_an_unopenable_sqlite_file_is_named(tmp_path: Path) -> None:
    err = one_line_error(run("--database-url", "sqlite:///missing-dir/x.db", "init"))
    assert "./missing-dir/x.db" in err


def test_the_dashboard_refuses_a_missing_sqlite_file_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nonexist.db"
    err = one_line_error(run("--database-url", f"sqlite:///{missing}", "dashboard", "--once"))
    assert "no database at" in err and "unistatus init" in err
    assert not missing.exists()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_dashboard_of_a_database_without_tables_is_not_called_healthy(
    backend: str, tmp_path: Path, postgres_url: str
) -> None:
    if backend == "sqlite":
        sqlite3.connect(tmp_path / "blank.db").close()
        url, admin, name = "sqlite:///blank.db", None, ""
    else:
        admin, url, name = _throwaway_database("_blank")
    try:
        shown = run("--database-url", url, "dashboard", "--once")
        header = shown.stdout.strip().splitlines()[0]
        assert "Migration dashboard" in header, shown.output
        assert "healthy" not in header and "unknown" in header, header
    finally:
        if admin is not None:
            gc.collect()
            _drop_database(admin, name)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://app@db1:6000/payments", "'payments' on db1:6000 as 'app'"),
        ("postgresql:///payments", "'payments' on the local socket (port 5432)"),
        # libpq's parameters in the query: it was "the local socket (port 5432)" of a
        # connection to 127.0.0.1:5999 (a probe).
        ("postgresql:///payments?host=127.0.0.1&port=5999", "'payments' on 127.0.0.1:5999"),
        (
            "postgresql:///payments?host=/var/run/postgresql",
            "the local socket in /var/run/postgresql",
        ),
        ("postgresql:///payments?host=h1:5432&host=h2:5432", "'payments' on h1:5432,h2:5432"),
        # One host with its port, several with one port (a second review).
        ("postgresql://app@/pay?host=db.internal:5433", "'pay' on db.internal:5433 as 'app'"),
        ("postgresql:///pay?host=h1&host=h2&port=6432", "'pay' on h1,h2 (port 6432)"),
    ],
)
def test_the_database_is_described_as_libpq_reaches_it(url: str, said: str) -> None:
    from unistatus.db.target import describe

    assert describe(url).endswith(said) or f"{said} " in describe(url), describe(url)
