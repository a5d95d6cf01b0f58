"""PostgreSQL's infinite times: read as a missing time, copied as one, archived as text.

A ``timestamp``, ``timestamptz`` or ``date`` may hold ``'infinity'`` or ``'-infinity'``
(an application's "valid until" column, a legacy row's placeholder), which no Python
date holds: psycopg refuses the row ("timestamp too large (after year 10K)"), and one
such legacy row (or a unified row an older release copied it into) stopped ``tx show``,
``check``, repair, continuous verification and the adapter's writes of it. As SQLite's
value that is no time (:mod:`unistatus.db.sqlite_times`), it is a *missing time*:

- :func:`read_infinite_times_as_missing` has each connection of an engine unistatus
  makes read one as None (``unistatus.db.connection_setup``), every other value as
  before (the C loader's, no work more on a finite one); exported, for an application
  to install on its own engine (unistatus never changes how that one reads);
- :func:`finite_time` is a time in SQL as the backfill and the capture copy it, NULL
  when infinite, so that the other time, or the copy's, stands in: no unified row gets
  an infinite time;
- :func:`infinite_times_as_text` has one connection read them as that text for a while
  (the archive keeps and restores them as such, the value as stored).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement

__all__ = ["finite_time", "infinite_times_as_text", "read_infinite_times_as_missing"]

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


def read_infinite_times_as_missing(dbapi_conn: Any, connection_record: Any = None) -> None:
    """``dbapi_conn`` (psycopg 3; any other driver: nothing changes) reads PostgreSQL's
    ``'infinity'`` and ``'-infinity'`` in a ``timestamp``, ``timestamptz`` or ``date``
    as None instead of raising psycopg's DataError; every other value as before.

    unistatus installs it on the engines it makes from a URL. An application passing
    its own Engine (or its connection, ``connection=``) installs it itself, if it wants
    that reading for all of that engine's reads, as a ``connect`` listener (the
    signature is the event's), before the engine's first connection::

        sqlalchemy.event.listen(engine, "connect", unistatus.read_infinite_times_as_missing)

    ``connection_record`` is unused (the ``connect`` event's second argument).
    """
    adapters = getattr(dbapi_conn, "adapters", None)
    if adapters is None or not hasattr(adapters, "register_loader"):
        return
    from psycopg import DataError
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    for name in _TYPES:
        info = adapters.types.get(name)
        if info is None:
            continue
        inner_class = adapters.get_loader(info.oid, Format.TEXT)
        if inner_class is None:
            continue

        class Missing(Loader):
            inner = inner_class

            def __init__(self, oid: int, context: Any = None) -> None:
                super().__init__(oid, context)
                self.load_inner = self.inner(oid, context).load

            def load(self, data: Any) -> Any:
                # Only what the inner loader refuses is looked at again: a finite time
                # costs one call more, not a comparison.
                try:
                    return self.load_inner(data)
                except DataError:
                    if bytes(data) in _INFINITE:
                        return None
                    raise

        adapters.register_loader(info.oid, Missing)


class _FiniteTime(ColumnElement[Any]):
    """A time, NULL where infinite (PostgreSQL); the time itself elsewhere."""

    inherit_cache = True

    def __init__(self, value: sa.ColumnElement[Any]) -> None:
        self.value = value
        self.type = value.type


def finite_time(value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``value`` (a time) as unistatus copies it: NULL (a missing time) where it is
    ``'infinity'`` or ``'-infinity'`` (PostgreSQL), as it is otherwise."""
    return _FiniteTime(value)


@compiles(_FiniteTime)
def _as_is(element: _FiniteTime, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.value, **kw)


@compiles(_FiniteTime, "postgresql")
def _finite_or_null(element: _FiniteTime, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(element.value, **kw)
    return f"CASE WHEN isfinite({value}) THEN {value} END"
