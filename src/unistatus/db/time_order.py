"""``column >= since`` for a time column, in the order of the instants the values are.

PostgreSQL compares times as times. SQLite has no time type and compares the text:
SQLAlchemy writes naive UTC ("2026-12-06 19:01:42.930000"), but an application's
sqlite3 writes an aware time with its offset ("2026-12-06 14:01:42.930000-05:00"),
which sorts before a UTC ``since`` it is after, so a ``--since`` scope and continuous
verification skipped it. On SQLite both sides are read by ``strftime`` (which applies
the offset) as UTC text to the millisecond: a value at or after ``since`` stays so
(both rounded alike), a value no date function can read (NULL) is out of the scope.
One function call per row read, on SQLite only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["at_or_after"]


class _Instant(FunctionElement[Any]):
    """A time, column or value, as the instant it is (its text in UTC on SQLite)."""

    name = "instant"
    inherit_cache = True


@compiles(_Instant)
def _as_is(element: _Instant, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(list(element.clauses)[0], **kw)


@compiles(_Instant, "sqlite")
def _sqlite(element: _Instant, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strftime('%Y-%m-%d %H:%M:%f', {compiler.process(list(element.clauses)[0], **kw)})"


def at_or_after(column: sa.ColumnElement[Any], since: datetime) -> sa.ColumnElement[bool]:
    """``column`` holds a time at or after ``since`` (aware)."""
    bound = sa.bindparam(None, since, type_=column.type)
    return _Instant(column) >= _Instant(bound)
