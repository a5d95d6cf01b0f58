"""PostgreSQL's infinite times, read as their text.

A ``timestamp``, ``timestamptz`` or ``date`` may hold ``'infinity'`` or ``'-infinity'``
(an application's "valid until" column, say), which no Python date holds: psycopg
refuses the row ("timestamp too large (after year 10K)"). :func:`infinite_times_as_text`
has one connection read them as that text for a while (the archive keeps and restores
them as such), every other value as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

__all__ = ["infinite_times_as_text"]

_TYPES = ("timestamp", "timestamptz", "date")
_INFINITE = (b"infinity", b"-infinity")


@contextmanager
def infinite_times_as_text(conn: sa.Connection) -> Iterator[None]:
    """Within the block, ``conn`` (PostgreSQL through psycopg; elsewhere nothing changes)
    reads an infinite time as its text; its loaders are as they were afterwards."""
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        yield
        return
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    adapters = conn.connection.dbapi_connection.adapters  # type: ignore[union-attr]
    kept: dict[int, type[Any]] = {}
    for name in _TYPES:
        info = adapters.types.get(name)
        if info is None:
            continue
        kept[info.oid] = adapters.get_loader(info.oid, Format.TEXT)

        class AsText(Loader):
            inner_class = kept[info.oid]

            def __init__(self, oid: int, context: Any = None) -> None:
                super().__init__(oid, context)
                self.inner = self.inner_class(oid, context)

            def load(self, data: Any) -> Any:
                if bytes(data) in _INFINITE:
                    return bytes(data).decode()
                return self.inner.load(data)

        adapters.register_loader(info.oid, AsText)
    try:
        yield
    finally:
        for oid, loader in kept.items():
            adapters.register_loader(oid, loader)
