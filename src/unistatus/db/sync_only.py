"""unistatus is synchronous: an asyncio engine or an async driver's URL refused up front.

Given one, nothing would work, and it would fail late and obscurely (an AttributeError
on an AsyncEngine, SQLAlchemy's MissingGreenlet on the first connection, the missing
async driver's ModuleNotFoundError): a ConfigError before anything connects says what to
give instead, and how an asyncio application writes in its own transaction.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.errors import ConfigError

__all__ = ["refuse_async_engine", "refuse_async_url"]

RECIPE = (
    "unistatus is synchronous: give it a synchronous engine or URL of its own "
    "(postgresql+psycopg://USER@HOST/DB); an asyncio application writes in its own "
    "transaction through SQLAlchemy's run_sync with connection=, e.g. await "
    "conn.run_sync(lambda c: adapter.update_status(..., connection=c)) (docs/adapter.md, "
    "'From asyncio code')"
)


def refuse_async_engine(database: object) -> None:
    """ConfigError for an AsyncEngine, or the ``sync_engine`` of one (its dialect is the
    async driver's: a statement on it needs the event loop's greenlet)."""
    if type(database).__module__.startswith("sqlalchemy.ext.asyncio"):
        raise ConfigError(f"the database is an asyncio {type(database).__name__}; {RECIPE}")
    if isinstance(database, sa.Engine) and database.dialect.is_async:
        raise ConfigError(
            f"the database is the engine of an asyncio driver "
            f"({database.dialect.name}+{database.dialect.driver}, an AsyncEngine's "
            f"sync_engine?); {RECIPE}"
        )


def refuse_async_url(url: sa.URL) -> None:
    """ConfigError for an async driver's URL (``postgresql+psycopg_async://``,
    ``postgresql+asyncpg://``, ``sqlite+aiosqlite://``), installed or not."""
    try:
        is_async = bool(url.get_dialect().is_async)
    except Exception:  # a driver SQLAlchemy does not know: refused later, as unsupported
        return
    if is_async:
        raise ConfigError(
            f"the database URL names the asyncio driver {url.get_driver_name()!r}; {RECIPE}"
        )
