"""An asyncio engine or URL where unistatus needs a synchronous one.

The adapter (and every command) is synchronous: an AsyncEngine, its ``sync_engine``, or
an async driver's URL (``postgresql+psycopg_async://``, ``postgresql+asyncpg://``) is a
ConfigError before anything connects, which says what to give instead (a synchronous
engine or URL) and how an asyncio application writes in its own transaction (run_sync
with ``connection=``). The refusals of an asyncio object as ``connection=`` name the
calls an async application makes (``session.run_sync``, ``async with conn.begin()``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from typer.testing import CliRunner

from conftest import Database
from support.adapters import adapter_in
from unistatus import ConfigError, DualWriteAdapter, DualWriteMode, InputError
from unistatus.cli import app


def _async_url(db: Database) -> str:
    return db.url.replace("+psycopg:", "+psycopg_async:")


@pytest.fixture
def async_engine(pg: Database) -> Iterator[AsyncEngine]:
    engine = create_async_engine(_async_url(pg))
    yield engine
    asyncio.run(engine.dispose())


def _refused_as_async(exc: pytest.ExceptionInfo[ConfigError]) -> None:
    text = str(exc.value)
    assert "synchronous" in text and "postgresql+psycopg://" in text
    assert "run_sync" in text and "connection=" in text


def test_an_async_engine_is_refused_with_the_recipe(
    pg: Database, async_engine: AsyncEngine
) -> None:
    with pytest.raises(ConfigError) as caught:
        DualWriteAdapter(async_engine, settings=pg.settings)  # type: ignore[arg-type]
    _refused_as_async(caught)
    with pytest.raises(ConfigError) as caught:
        DualWriteAdapter(async_engine.sync_engine, settings=pg.settings)
    _refused_as_async(caught)


@pytest.mark.parametrize("driver", ["psycopg_async", "asyncpg"])
def test_an_async_drivers_url_is_refused_with_the_recipe(pg: Database, driver: str) -> None:
    url = pg.url.replace("+psycopg:", f"+{driver}:")
    with pytest.raises(ConfigError) as caught:
        DualWriteAdapter(url, settings=pg.settings)
    _refused_as_async(caught)


def test_the_command_line_refuses_an_async_url_as_bad_configuration(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UNISTATUS_DATABASE_URL", raising=False)
    result = CliRunner().invoke(
        app, ["--database-url", _async_url(pg), "mode", "get", "--json"], env={"COLUMNS": "400"}
    )
    assert result.exit_code == 2, result.output
    assert '"error": "ConfigError"' in result.stdout, result.stdout
    assert "synchronous" in result.stderr and "MissingGreenlet" not in result.stderr


def test_an_async_session_is_told_of_session_run_sync(
    pg: Database, async_engine: AsyncEngine
) -> None:
    a = adapter_in(pg, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    entity_id = str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)

    def change(conn: object) -> object:
        return a.update_status(entity_id, "PROCESSING", "r", "svc", connection=conn)

    async def application() -> None:
        async with AsyncSession(async_engine) as session:
            with pytest.raises(InputError, match=r"session\.run_sync"):
                change(session)

    asyncio.run(application())
    a.close()


def test_an_async_connection_not_begun_is_told_to_begin_it_async(
    pg: Database, async_engine: AsyncEngine
) -> None:
    a = adapter_in(pg, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    entity_id = str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)

    def change(conn: object) -> object:
        return a.update_status(entity_id, "PROCESSING", "r", "svc", connection=conn)

    async def application() -> None:
        async with async_engine.connect() as conn:
            with pytest.raises(InputError, match=r"conn\.run_sync"):
                change(conn)
            # Through run_sync, but no transaction begun: the async way to begin one.
            with pytest.raises(InputError, match=r"`async with conn\.begin\(\):`"):
                await conn.run_sync(lambda c: change(c) if not c.in_transaction() else None)

    asyncio.run(application())
    a.close()


def test_a_synchronous_engine_is_still_taken(pg: Database) -> None:
    a = DualWriteAdapter(sa.create_engine(pg.url), settings=pg.settings)
    a.close()
