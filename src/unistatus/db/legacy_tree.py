"""The tables under a legacy table (PostgreSQL): its partitions at every level, and the
tables that inherit from it.

A statement that names one of them writes the legacy table's rows without naming the
table: it fires their triggers, not the table's statement triggers (the capture puts its
own on each, :mod:`unistatus.migration.capture_ddl`), and a ``BEFORE UPDATE`` row trigger
on one of them fires for an UPDATE through the table (:mod:`unistatus.db.app_triggers`).
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["TREE", "tables_under"]

# ``rel(oid)``: the table named by the parameter ``:rel`` (SQL text, quoted as a
# statement names it) and every table under it, through pg_inherits (which holds both
# partitions and inheriting tables).
TREE = (
    "WITH RECURSIVE rel(oid) AS ("
    " SELECT CAST(to_regclass(:rel) AS oid)"
    " UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN rel ON i.inhparent = rel.oid"
    ") "
)

_UNDER = sa.text(
    TREE + "SELECT n.nspname, c.relname FROM rel "
    "JOIN pg_catalog.pg_class c ON c.oid = rel.oid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE rel.oid <> CAST(to_regclass(:rel) AS oid) AND c.relkind <> 'f' ORDER BY 1, 2"
)


def tables_under(conn: sa.Connection, rel: str) -> list[tuple[str, str]]:
    """The tables under ``rel`` (a table as SQL names it), each as (its schema, its
    name); not a foreign table (its rows are another server's, and PostgreSQL takes no
    trigger with transition tables on one). None on SQLite, which has no such tables."""
    if conn.dialect.name != "postgresql":
        return []
    return [(str(schema), str(name)) for schema, name in conn.execute(_UNDER, {"rel": rel})]
