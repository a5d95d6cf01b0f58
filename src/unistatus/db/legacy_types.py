"""The types of an application's legacy columns, as unistatus must treat them.

A status (or currency) column of a PostgreSQL enum type, or a domain over one, is read
and compared as text and written cast back (:func:`cast_type`, :func:`as_text`; the
per-role forms are :class:`unistatus.db.legacy.LegacyTable`'s ``read`` and
``as_stored``); a status column that cannot hold text, or an enum without a value
unistatus writes, is a ConfigError at start (:func:`check_status_type`); a key must be an
integer (:func:`integer_key`). :class:`Named` names a type by its SQL name (a view's
column cast to the enum a retired column had).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.domain.mapping import canonical_legacy_values
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import ConfigError

__all__ = [
    "Named",
    "as_text",
    "base_type",
    "cast_type",
    "check_status_type",
    "check_time_type",
    "integer_key",
]


class Named(sa.types.UserDefinedType[Any]):
    """A type of the application's by its SQL name (a view's column cast to it)."""

    cache_ok = True

    def __init__(self, name: str) -> None:
        self.name = name

    def get_col_spec(self, **_kw: Any) -> str:
        return self.name


def cast_type(column: sa.Column[Any], dialect: str) -> sa.types.TypeEngine[Any] | None:
    """The column's type if a text value must be cast to and from it: a PostgreSQL enum
    (or a domain over one), whose values unistatus reads as text and writes cast back;
    a ``char(n)`` (bpchar, or a domain over one), whose values come back padded with
    spaces to ``n`` unless read cast to text (the cast strips them).
    None for anything PostgreSQL compares with text as it is (a text type, a domain over
    one, an extension's text type such as citext), and on SQLite (which compares any
    declared type as its values)."""
    if dialect == "sqlite":
        return None
    return column.type if isinstance(base_type(column.type), sa.Enum | sa.CHAR) else None


def integer_key(column: sa.Column[Any]) -> bool:
    """An integer key: an integer type, a NUMERIC without decimals, or a domain over one."""
    kind = base_type(column.type)
    if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
        return kind.scale == 0
    return isinstance(kind, sa.Integer)


def base_type(kind: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """A domain's base type; any other type as it is."""
    base = getattr(kind, "data_type", None)
    return base if isinstance(base, sa.types.TypeEngine) else kind


def as_text(column: sa.Column[Any], dialect: str) -> sa.ColumnElement[Any]:
    """A text role's column as unistatus reads and compares it (:func:`cast_type`)."""
    return column if cast_type(column, dialect) is None else sa.cast(column, sa.String)


# Types that cannot hold the legacy statuses (their values are text).
_NOT_TEXT = (
    sa.Integer,
    sa.Numeric,
    sa.Boolean,
    sa.Date,
    sa.DateTime,
    sa.Time,
    sa.Interval,
    sa.LargeBinary,
    sa.JSON,
    sa.Uuid,
)


def _not_text(column: sa.Column[Any], dialect: str) -> str | None:
    """Why the status column cannot hold the legacy statuses, if it cannot: a number,
    a time, ... (an integer code of the application's). A text type, an enum (cast:
    :func:`cast_type`), a domain over either, or a type reflection does not know (an
    extension's, such as citext) is taken; SQLite compares any declared type as its
    values."""
    if dialect == "sqlite":
        return None
    kind = base_type(column.type)
    return f"of type {kind}" if isinstance(kind, _NOT_TEXT) else None


def check_status_type(
    system: LegacySystemType, shown: str, status: sa.Column[Any], dialect: str
) -> None:
    """A ConfigError unless the status column can hold every value unistatus writes:
    text, or an enum with the canonical legacy value of each unified status (what the
    unified-primary modes, a rollback's replay and a unified-wins repair write; found
    missing only then, it would stop a rollback)."""
    why = _not_text(status, dialect)
    if why is not None:
        raise ConfigError(
            f"legacy table {shown!r}: its status column {status.name!r} is {why}; the "
            "legacy statuses are text (a text column, or an enum of them)"
        )
    kind = cast_type(status, dialect)
    if kind is None:
        return
    enum = base_type(kind)  # a domain over an enum: the enum
    labels = set(getattr(enum, "enums", None) or ())
    missing = sorted(set(canonical_legacy_values(system)) - labels)
    if labels and missing:
        name = getattr(enum, "name", None) or str(enum)
        add = "; ".join(f"ALTER TYPE {name} ADD VALUE '{label}'" for label in missing)
        raise ConfigError(
            f"legacy table {shown!r}: its status type {name} lacks "
            f"{', '.join(repr(m) for m in missing)}, which unistatus writes to legacy "
            f"(the canonical legacy value of a unified status); add them first: {add}"
        )


# What cannot hold the times unistatus writes (a datetime): a number or a truth value.
_NOT_TIME = (sa.Numeric, sa.Integer, sa.Boolean)


def check_time_type(shown: str, role: str, column: sa.Column[Any], dialect: str) -> None:
    """A ConfigError unless a time column (``created_at``, ``updated_at``) can hold the
    times unistatus writes. SQLite reads a type it does not know by its affinity: a
    column declared ``timestamptz`` (DDL shared with PostgreSQL) is NUMERIC there, and
    a time bound to it fails in the driver, on every write."""
    kind = base_type(column.type)
    if not isinstance(kind, _NOT_TIME):
        return
    fix = (
        " (SQLite reads an unknown declared type by its affinity); declare it DATETIME, "
        "TIMESTAMP or TEXT"
        if dialect == "sqlite"
        else "; declare it timestamp or timestamptz"
    )
    raise ConfigError(
        f"legacy table {shown!r}: its {role} column {column.name!r} is of type {kind}, "
        f"which cannot hold the times unistatus writes{fix}"
    )
