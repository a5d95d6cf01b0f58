"""Revision 0006's record of a legacy status column's own type (PostgreSQL): what the
drop keeps and the undo adds the column back with.

Part of revision 0006 (versions/r001_retire_legacy_columns.py), frozen with it: the
revision loads this file by its path (it imports nothing of the package, whose code may
change after it was written), and this file imports nothing of the package either. Kept
apart only for the package's limit on a module's length.

The drop records the column's type as PostgreSQL names it (``format_type(atttypid,
atttypmod)``: ``character(30)``, ``text``, an enum or a domain, schema-qualified where
the search_path does not find it) and its collation where it is not the type's default
(``COLLATE "C"``). The undo adds the column back with both and casts the refill to the
type: the column is what it was, and so is the status checksum (``char(30)`` came back
``varchar(30)``, ``text COLLATE "C"`` ``varchar(64)`` when only a length was recorded).
A retirement recorded before (a length, and an enum's or a domain's name) undoes as then.

The cast is to the type without its length (its catalog name: ``pg_catalog.varchar``,
``pg_catalog.bpchar``), the column's own assignment enforcing that: an
explicit ``CAST(x AS character varying(20))`` cuts a longer value short without an
error, and a longer ``legacy_status`` can be written while the column is retired
(phase 4). Before anything changes, the undo is refused naming such rows
(:func:`too_long`); the assignment's error stays behind that, should one be missed.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

_COLUMN_TYPE = sa.text(
    "SELECT format_type(a.atttypid, a.atttypmod) AS sql_type, "
    "CASE WHEN a.attcollation <> t.typcollation "
    "THEN quote_ident(n.nspname) || '.' || quote_ident(co.collname) END AS collation "
    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
    "LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation "
    "LEFT JOIN pg_catalog.pg_namespace n ON n.oid = co.collnamespace "
    "WHERE a.attrelid = to_regclass(:rel) AND a.attname = :column AND NOT a.attisdropped"
)


def recorded_type(bind: sa.Connection, table_sql: str, column: str) -> dict[str, Any]:
    """The column's type and collation (None: its type's default), for the record."""
    row = bind.execute(_COLUMN_TYPE, {"rel": table_sql, "column": column}).one()
    return {"sql_type": row.sql_type, "collation": row.collation}


class Named(sa.types.UserDefinedType[Any]):
    """A type by its SQL name (to add a column of it, and to cast to it). As
    ``unistatus.db.legacy_types.Named``, frozen here."""

    cache_ok = True

    def __init__(self, name: str) -> None:
        self.name = name

    def get_col_spec(self, **_kw: Any) -> str:
        return self.name


# The type by its catalog name, schema-qualified (``pg_catalog.bpchar``): without a
# modifier, ``character`` (what ``format_type(atttypid, NULL)`` names it) is char(1).
_REFILL_TYPE = sa.text(
    "SELECT quote_ident(n.nspname) || '.' || quote_ident(t.typname) "
    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
    "WHERE a.attrelid = to_regclass(:rel) AND a.attname = :column AND NOT a.attisdropped"
)


def refill_type(bind: sa.Connection, table_sql: str, column: str) -> sa.types.TypeEngine[Any]:
    """The type to cast the refill to: the restored column's, without its length (the
    assignment to the column checks the length, and fails on a longer value)."""
    return Named(bind.execute(_REFILL_TYPE, {"rel": table_sql, "column": column}).scalar_one())


def too_long(
    bind: sa.Connection,
    info: dict[str, Any],
    table_name: str,
    key: sa.ColumnElement[Any],
    value: sa.ColumnElement[Any],
) -> str | None:
    """Why the undo is refused: the rows (``key``) of ``table_name`` whose refill
    ``value`` is longer than the recorded length of their text column (trailing
    spaces aside: PostgreSQL drops those without an error); None if there are none, or
    no length to exceed (an enum, a domain, ``text``)."""
    length = info.get("length")
    if info.get("type") or not isinstance(length, int):
        return None
    longer = sa.func.char_length(sa.func.rtrim(value)) > length
    rows = bind.execute(sa.select(key).where(longer).order_by(key).limit(11)).scalars().all()
    if not rows:
        return None
    count = bind.execute(sa.select(sa.func.count(key)).where(longer)).scalar_one()
    named = ", ".join(str(r) for r in rows[:10]) + (", ..." if count > 10 else "")
    kind = info.get("sql_type") or f"length {length}"
    return (
        f"{count} row(s) of {table_name} ({named}) have a legacy_status longer than the "
        f"{length} characters their status column holds ({kind}), stored while it was "
        "retired; restored, they would be cut short: give them a status that fits "
        "(unified_transactions.legacy_status), then undo again"
    )


def restored_types(
    info: dict[str, Any],
) -> tuple[sa.types.TypeEngine[Any], sa.types.TypeEngine[Any] | None]:
    """(the type to add the column back with, collation included; the type to cast the
    refilled values to, None: none) from what the drop recorded (``info``)."""
    if info.get("sql_type"):
        collate = f" COLLATE {info['collation']}" if info.get("collation") else ""
        return Named(info["sql_type"] + collate), Named(info["sql_type"])
    if info.get("type"):  # recorded before: an enum's or a domain's name
        return Named(info["type"]), Named(info["type"])
    return sa.String(info.get("length") or 64), None
