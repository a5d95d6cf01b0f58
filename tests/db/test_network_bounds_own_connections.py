"""The ``network.*`` settings reach every PostgreSQL connection unistatus opens itself,
not only its engines' pools (tests/db/test_network_bounds.py).

A review found two connections on the defaults whatever the settings said: a claim's
(a check run's, a load test's: a connection of its own, held open for the whole run,
which a dead link would have kept "held" for as long as the kernel's own timeouts) and
the engine of ``archive restore`` (the database ``--database-url`` names), which was
not named as the command's sessions are either.

Each new connection to the database is seen as it opens: the parameters libpq holds
(the keepalives cannot be seen firing: tests/db/test_network_bounds.py) and the name
the server has for it (``pg_stat_activity``, read from the test's own connection).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app
from unistatus.config import load_settings
from unistatus.db.engine import create_engine, session_name
from unistatus.migration.archive import export_archive
from unistatus.migration.check import run_check
from unistatus.sim.loadtest import run_load_test

# Values no default has: a connection that carries them got them from the settings.
NETWORK = {
    "connect_timeout_seconds": 7,
    "keepalives_idle_seconds": 41,
    "keepalives_interval_seconds": 6,
    "keepalives_count": 4,
    "tcp_user_timeout_ms": 12_345,
}
BOUNDS = {
    "connect_timeout": "7",
    "keepalives": "1",
    "keepalives_idle": "41",
    "keepalives_interval": "6",
    "keepalives_count": "4",
    "tcp_user_timeout": "12345",
}
ENV = {f"UNISTATUS_NETWORK__{k.upper()}": str(v) for k, v in NETWORK.items()}


@dataclass
class Opened:
    name: str  # application_name as the server has it
    bounds: dict[str, str | None]  # the BOUNDS parameters as libpq holds them


@contextmanager
def opened_connections(url: str) -> Iterator[list[Opened]]:
    """Every new connection this process opens to ``url``'s database while the block
    runs, as it opens."""
    target = sa.engine.make_url(url)
    watcher = psycopg.connect(
        target.set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
    )
    seen: list[Opened] = []

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        params = dbapi_conn.info.get_parameters()
        if params.get("dbname") != target.database:
            return
        name = watcher.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = %s",
            (dbapi_conn.info.backend_pid,),
        ).fetchone()
        assert name is not None
        seen.append(Opened(str(name[0]), {k: params.get(k) for k in BOUNDS}))

    event.listen(sa.pool.Pool, "connect", on_connect)
    try:
        yield seen
    finally:
        event.remove(sa.pool.Pool, "connect", on_connect)
        watcher.close()


def test_a_check_runs_claim_is_bounded_by_the_settings(pg: Database) -> None:
    settings = load_settings(database_url=pg.url, schema=pg.settings.schema, network=NETWORK)
    engine = create_engine(  # as the command makes it
        pg.url,
        schema=settings.schema,
        application_name=session_name("check"),
        network=settings.network,
    )
    try:
        with opened_connections(pg.url) as opened:
            run_check(engine, settings)
    finally:
        engine.dispose()
    assert "unistatus/check claim" in [o.name for o in opened]
    assert [o for o in opened if o.bounds != BOUNDS] == []


def test_a_load_tests_claim_is_bounded_by_the_settings(pg: Database) -> None:
    settings = load_settings(database_url=pg.url, schema=pg.settings.schema, network=NETWORK)
    with opened_connections(pg.url) as opened:
        run_load_test(pg.url, settings, transactions=2, concurrent=1)
    assert "unistatus/loadtest claim" in [o.name for o in opened]
    assert [o for o in opened if o.bounds != BOUNDS] == []


def test_archive_restore_connects_as_the_command_does(
    pg: Database, empty_pg: str, tmp_path: Path
) -> None:
    out = tmp_path / "archive"
    export_archive(pg.engine, pg.settings, out)
    with opened_connections(empty_pg) as opened:
        result = CliRunner().invoke(
            app,
            ["--database-url", pg.url, "archive", "restore", str(out), "--database-url", empty_pg],
            env=ENV,
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    assert opened, "the restore opened no connection to its target"
    assert [o for o in opened if (o.name, o.bounds) != ("unistatus/archive", BOUNDS)] == []
