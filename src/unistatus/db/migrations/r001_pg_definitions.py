"""Revision 0006's record of what goes with a legacy status column (PostgreSQL): its
DEFAULT, the indexes and the constraints that involve it, recorded by the drop
(:func:`definitions`) and created again by the undo after the refill (:func:`recreate`).

Part of revision 0006 (versions/r001_retire_legacy_columns.py), frozen with it: the
revision loads this file by its path (it imports nothing of the package, whose code may
change after it was written), and this file imports nothing of the package either. Kept
apart only for the package's limit on a module's length.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

# What goes with a column, recorded by upgrade() for the undo. A retirement recorded
# without them was done before they were.
DEFINITION_KEYS = ("default", "indexes", "constraints")

# The revision's logger: the undo's warnings read as the revision's, as before the split.
log = logging.getLogger("alembic.runtime.migration")


def definitions(bind: sa.Connection, table_sql: str, column: str) -> dict[str, Any]:
    """PostgreSQL: what the drop takes with the status column, as the catalog prints it,
    for the undo to create again: its DEFAULT, the indexes that involve it (its key, an
    expression, a predicate; not those of a constraint), and the constraints that
    involve it (CHECK, UNIQUE, foreign keys), each with its table schema-qualified."""
    where = {"rel": table_sql, "col": column}
    found = bind.execute(
        sa.text(
            "SELECT a.attrelid AS rel, a.attnum AS num FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(:rel) AND a.attname = :col AND NOT a.attisdropped"
        ),
        where,
    ).one()
    at = {"rel": found.rel, "num": found.num}
    default = bind.execute(
        sa.text(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
            "WHERE d.adrelid = :rel AND d.adnum = :num"
        ),
        at,
    ).scalar_one_or_none()
    indexes = bind.execute(
        sa.text(
            "SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = :rel AND (:num = ANY (i.indkey::int2[]) OR EXISTS ("
            "  SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
            "  AND d.objid = i.indexrelid AND d.refobjid = :rel AND d.refobjsubid = :num))"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid"
            "  AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x')) "
            "ORDER BY c.relname"
        ),
        at,
    ).all()
    constraints = bind.execute(
        sa.text(
            "SELECT k.conname AS name, pg_get_constraintdef(k.oid) AS definition, "
            "quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS on_table "
            "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE k.contype IN ('c', 'u', 'p', 'x', 'f') AND ("
            " (k.conrelid = :rel AND :num = ANY (k.conkey))"
            " OR (k.confrelid = :rel AND :num = ANY (k.confkey))) "
            "ORDER BY k.contype = 'f', k.conname"
        ),
        at,
    ).all()
    return {
        "default": default,
        "indexes": [{"name": r.name, "definition": r.definition} for r in indexes],
        "constraints": [
            {"name": r.name, "definition": r.definition, "table": r.on_table} for r in constraints
        ],
    }


def recreate(
    bind: sa.Connection, table_sql: str, spec: dict[str, Any], info: dict[str, Any]
) -> dict[str, Any]:
    """PostgreSQL: the restored column's DEFAULT, indexes and constraints, as upgrade()
    recorded them (after the refill: each constraint is checked against the values)."""
    if not all(key in info for key in DEFINITION_KEYS):
        log.warning(
            "%s.%s: its DEFAULT, indexes and constraints were not recorded (retired before "
            "they were): not restored; create them again by hand if it had any",
            spec["table"],
            spec["status"],
        )
        return {"definitions": "not recorded"}
    table = table_sql
    preparer = bind.dialect.identifier_preparer
    # exec_driver_sql: the catalog's text as it is (no bind parameters read into it).
    if info["default"] is not None:
        column = preparer.quote(spec["status"])
        bind.exec_driver_sql(
            f"ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {info['default']}"
        )
    for index in info["indexes"]:
        bind.exec_driver_sql(index["definition"])
    for constraint in info["constraints"]:
        name = preparer.quote(constraint["name"])
        bind.exec_driver_sql(
            f"ALTER TABLE {constraint['table']} ADD CONSTRAINT {name} {constraint['definition']}"
        )
    return {
        "definitions": "restored",
        "default": info["default"],
        "indexes": [i["name"] for i in info["indexes"]],
        "constraints": [c["name"] for c in info["constraints"]],
    }
