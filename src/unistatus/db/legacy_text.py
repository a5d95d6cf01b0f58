"""SQLite legacy amount and time columns declared as text, converted at the boundary.

SQLite applications keep money as text for exactness (``amount TEXT``) and times as ISO
text (``created_at TEXT``), in ``STRICT`` tables too. The driver binds no Decimal, and
SQLAlchemy's DATETIME takes no string: a create failed binding its amount, and the first
dual write of a legacy row failed copying its ``created_at`` into the unified row.
:func:`convert_text_columns` gives such a column, once, when the legacy tables are
resolved, a type that converts what crosses it: an amount is written as its exact text
(``Decimal("12.30")`` as ``'12.30'``) and read as a Decimal; a time is written as the UTC
text SQLAlchemy writes SQLite's DATETIME in (so that it sorts with the application's own
``'YYYY-MM-DD HH:MM:SS'``) and read as an aware UTC time (a Unix time as one, as
:mod:`unistatus.db.sqlite_times` reads it; text that is no time as None). Every path that
names the column (the adapter, a caller's transaction, a rollback's replay, ``check``)
gets it; the backfill and the capture copy the values in SQL, where SQLite converts them
as the rule reads them (:mod:`unistatus.db.text_times`: a time, or NULL where it reads
none). PostgreSQL's columns are left as reflected (no work per write there): statements
read a text time there as the time the rule reads in it, and cast a text amount.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc
from unistatus.db.legacy_types import base_type
from unistatus.db.text_times import read_time_text
from unistatus.domain.amount_text import is_number_text

__all__ = [
    "TextAmount",
    "TextTime",
    "convert_text_columns",
    "is_text_column",
    "is_text_time_column",
    "stored_type",
]

# How SQLAlchemy writes SQLite's DATETIME: the unified rows' times, and the text the
# application's rows hold ('2025-01-01 00:00:00') sorts with it.
_STORED = "%Y-%m-%d %H:%M:%S.%f"


class _Converted(sa.types.TypeDecorator[Any]):
    """A text column's type (``stored``: as reflected, so its DDL, its length and what
    reads it as stored are unchanged: :func:`stored_type`), converting what crosses it."""

    impl = sa.String
    cache_ok = True

    def __init__(self, stored: sa.types.TypeEngine[Any]) -> None:
        super().__init__()
        self.stored = stored  # named as the argument: SQLAlchemy copies a type by it
        self.impl = stored  # type: ignore[assignment]  # an instance, as __init__ sets it


class TextAmount(_Converted):
    """A text amount column: a number written as its exact text, read as a Decimal."""

    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if isinstance(value, Decimal | int) and not isinstance(value, bool):
            return format(Decimal(value), "f")  # never an exponent: '1E+2' is '100'
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if not isinstance(value, str) or not is_number_text(value):
            # No plain decimal ('abc', '1e3', which Decimal reads as 1000): as stored,
            # so a comparison calls it a mismatch, as the copyable rule calls it no amount.
            return value
        return Decimal(value.strip())


class TextTime(_Converted):
    """A text time column: a time written as UTC text, read as an aware UTC time."""

    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if isinstance(value, datetime):
            utc = as_utc(value)
            assert utc is not None
            return utc.replace(tzinfo=None).strftime(_STORED)
        if isinstance(value, date):
            return value.isoformat()
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        return read_time(value)


def read_time(value: Any) -> datetime | None:
    """A stored time as an aware UTC time: text as the rule reads it
    (:func:`~unistatus.db.text_times.read_time_text`, as the statements that copy it do),
    a Unix time (seconds, as SQLite's ``'unixepoch'``); None for a value that is no time."""
    if value is None or isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str):
        return read_time_text(value)
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        pass
    return None


def is_text_column(column: sa.Column[Any]) -> bool:
    """Whether the column is declared text (TEXT, VARCHAR, CHAR, CLOB). One with no type
    at all is left as it is: SQLite keeps what it is given there, an integer as INTEGER,
    and an application's comparisons depend on it."""
    kind = base_type(column.type)
    return isinstance(kind, sa.String) and not isinstance(kind, sa.Enum)


def is_text_time_column(column: sa.Column[Any]) -> bool:
    """Whether a time column holds text: declared so (PostgreSQL), or converted
    (SQLite: :class:`TextTime`)."""
    return isinstance(column.type, TextTime) or is_text_column(column)


def stored_type(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """``type_`` as the database holds the column: a converted text column's own type
    (what must see the value as stored, the archive, reads it so)."""
    return type_.impl_instance if isinstance(type_, _Converted) else type_


_CONVERTERS: dict[str, type[_Converted]] = {
    "amount": TextAmount,
    "created_at": TextTime,
    "updated_at": TextTime,
}


def convert_text_columns(columns: Mapping[str, sa.Column[Any] | None], dialect: str) -> None:
    """On SQLite, give each text column among the amount and the times (``columns``, by
    role) the type that converts its values (:class:`TextAmount`, :class:`TextTime`).
    On PostgreSQL such a column is left as it is: statements read a text time as the
    time the rule reads in it (:func:`unistatus.db.text_times.text_time`) and cast a
    text amount where they copy or compare it
    (:meth:`unistatus.db.legacy.LegacyTable.as_copied`)."""
    if dialect != "sqlite":
        return
    for role, convert in _CONVERTERS.items():
        column = columns.get(role)
        if column is not None and is_text_column(column):
            column.type = convert(column.type)
