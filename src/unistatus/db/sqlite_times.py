"""SQLite's times as unistatus reads them.

SQLite keeps any value in any column: an application's TIMESTAMP column may hold Unix
times (``1700000000``, a common way to store times in SQLite) or text that is no time at
all, which SQLAlchemy's reader refuses (``fromisoformat: argument must be str``), so one
such row stopped every read and write of its transaction. :func:`read_times_loosely`
makes an engine read a number as Unix seconds (UTC, as SQLite's ``'unixepoch'`` does) and
a value that is no time as unknown (None); what writes times is unchanged. What must see
the value as stored (the archive) reads it :func:`strictly`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from unistatus.db.legacy_text import stored_type

__all__ = ["LooseDateTime", "read_times_loosely", "strictly"]


class LooseDateTime(sqlite.DATETIME):
    """SQLite's DATETIME, reading a Unix time as one and a value that is no time as None."""

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> Callable[[Any], Any]:
        parse = super().result_processor(dialect, coltype)

        def read(value: Any) -> Any:
            if value is None or isinstance(value, datetime):
                return value
            if isinstance(value, int | float) and not isinstance(value, bool):
                try:
                    return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
                except (OverflowError, OSError, ValueError):
                    return None
            try:
                return parse(value) if parse is not None else value
            except (TypeError, ValueError):
                return None

        return read


def read_times_loosely(engine: sa.Engine) -> None:
    """Every time column ``engine`` (SQLite) reads, declared or reflected, as
    :class:`LooseDateTime`."""
    engine.dialect.colspecs = {**engine.dialect.colspecs, sa.DateTime: LooseDateTime}


def strictly(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """``type_`` (a dialect's own) as SQLAlchemy reads it, without :class:`LooseDateTime`'s
    leniency, and a legacy text column's as the text it holds (without its conversion:
    :func:`unistatus.db.legacy_text.stored_type`)."""
    type_ = stored_type(type_)
    if isinstance(type_, LooseDateTime):
        strict: sa.types.TypeEngine[Any] = type_.adapt(sqlite.DATETIME)  # type: ignore[no-untyped-call]
        return strict
    return type_
