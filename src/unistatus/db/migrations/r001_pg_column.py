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
