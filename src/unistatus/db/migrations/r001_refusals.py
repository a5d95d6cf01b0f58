"""Revision 0006's refusals of a legacy table the drop cannot work on: one that is not a
table (a view, a materialized view, a foreign table), and a PostgreSQL table with a
trigger whose function reads the status column.

`unistatus retire legacy-columns` refuses both before it runs the revision
(:mod:`unistatus.db.legacy_kinds`, :func:`unistatus.db.column_dependents.pg_triggers_reading`);
these are their frozen copies, so that the revision run directly (``alembic upgrade
retire@head``) refuses them too: a view met DROP COLUMN with a database error rather
than a refusal naming it, and a PL/pgSQL body is no dependency PostgreSQL knows of, so
the drop went through and every later write the trigger fired on failed ('record "new"
has no field "status"').

Part of revision 0006 (versions/r001_retire_legacy_columns.py), frozen with it: the
revision loads this file by its path (it imports nothing of the package, whose code may
change after it was written), and this file imports nothing of the package either.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

_PG_KINDS = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}
_PG_KIND = sa.text("SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = to_regclass(:rel)")

# The application's triggers on the table and on every table under it (its partitions,
# its inheriting tables: the drop recurses to them), with their function's source; not
# a constraint's internal one, nor the capture's own (the command drops them first).
_PG_TRIGGER_SOURCES = sa.text(
    "WITH RECURSIVE rel(oid) AS ("
    " SELECT CAST(to_regclass(:rel) AS oid)"
    " UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN rel ON i.inhparent = rel.oid"
    ") "
    "SELECT t.tgname, CAST(CAST(t.tgrelid AS regclass) AS text),"
    " CAST(CAST(t.tgfoid AS regprocedure) AS text), p.prosrc "
    "FROM pg_catalog.pg_trigger t JOIN rel ON t.tgrelid = rel.oid "
    "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
    "WHERE NOT t.tgisinternal AND t.tgname NOT LIKE 'unistatus\\_capture\\_%' ORDER BY 2, 1"
)


def not_a_table(bind: sa.Connection, spec: dict[str, Any], table_sql: str) -> str | None:
    """Why the drop cannot work on the legacy table ``spec`` (``table_sql``: its name in
    SQL) because it is not a table; None when it is one (or there is none)."""
    kind = None
    if bind.dialect.name == "postgresql":
        relkind = bind.execute(_PG_KIND, {"rel": table_sql}).scalar_one_or_none()
        kind = _PG_KINDS.get(str(relkind)) if relkind is not None else None
    elif bind.dialect.name == "sqlite":
        catalog = "sqlite_master"
        if spec.get("schema"):
            catalog = f"{bind.dialect.identifier_preparer.quote_schema(spec['schema'])}.{catalog}"
        found = bind.execute(
            sa.text(f"SELECT 1 FROM {catalog} WHERE type = 'view' AND name = :t COLLATE NOCASE"),
            {"t": spec["table"]},
        ).first()
        kind = "a view" if found is not None else None
    if kind is None:
        return None
    shown = spec["table"] if spec.get("schema") is None else f"{spec['schema']}.{spec['table']}"
    return (
        f"legacy table {shown!r} is {kind}: the retirement needs a table (PostgreSQL: an "
        "ordinary or partitioned one; a retirement's DROP COLUMN cannot work on a view or "
        "a foreign table). Point legacy_tables at the table itself"
    )


def triggers_reading(bind: sa.Connection, spec: dict[str, Any], table_sql: str) -> str | None:
    """PostgreSQL: why the application's triggers whose function reads ``NEW.status`` or
    ``OLD.status`` (the legacy status column; case aside, quoted or not) stop the drop;
    None when there is none (and elsewhere)."""
    if bind.dialect.name != "postgresql":
        return None
    column = spec["status"]
    read = re.compile(
        rf'(?<![\w$])(new|old)\s*\.\s*("{re.escape(column)}"|{re.escape(column)}(?![\w$]))',
        re.IGNORECASE,
    )
    found = bind.execute(_PG_TRIGGER_SOURCES, {"rel": table_sql}).all()
    reading = [
        f"trigger {name} on {on} (function {function})"
        for name, on, function, source in found
        if source and read.search(str(source))
    ]
    if not reading:
        return None
    table = spec["table"]
    return (
        f"{table}.{column} is read by {', '.join(reading)}: the function reads "
        f"NEW.{column} or OLD.{column}, so after the drop every write the trigger fires "
        "on would fail ('record \"new\" has no field'); drop the trigger or change its "
        "function first, and create it again after an undo"
    )
