"""The PostgreSQL database the whole run shares: its shape as installed, and putting it
back when a test left it otherwise.

A test undoes what it does to the schema in its own ``finally`` (an application's
column, trigger or table, a retirement, the capture). One that failed before it could,
or a thread of its that outlived it, would otherwise fail every later test on the same
database with errors that name nothing of the cause (a run of 51 failures for one).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

Item = tuple[str, ...]

# Every schema object a test may add or take away, but the server's own: schemas,
# relations, columns, triggers (not the ones the server makes for constraints), enum
# and domain types.
_SHAPE = sa.text(
    """
    WITH ns AS (
        SELECT oid, nspname FROM pg_namespace
        WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
    ), rel AS (
        SELECT c.oid, ns.nspname, c.relname, c.relkind FROM pg_class c JOIN ns
        ON ns.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
    )
    SELECT 'schema', nspname, '', '' FROM ns
    UNION ALL SELECT 'relation', nspname, relname, relkind::text FROM rel
    UNION ALL SELECT 'column', rel.nspname, rel.relname, a.attname FROM rel
        JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL SELECT 'trigger', rel.nspname, rel.relname, t.tgname FROM rel
        JOIN pg_trigger t ON t.tgrelid = rel.oid AND NOT t.tgisinternal
    UNION ALL SELECT 'type', ns.nspname, t.typname, t.typtype::text FROM pg_type t
        JOIN ns ON ns.oid = t.typnamespace WHERE t.typtype IN ('e', 'd')
    """
)


def shape(engine: sa.Engine) -> set[Item]:
    """The database's schema objects now, as comparable items."""
    with engine.connect() as conn:
        return {tuple(row) for row in conn.execute(_SHAPE).all()}


def _quoted(*names: str) -> str:
    return ".".join('"' + n.replace('"', '""') + '"' for n in names)


def put_back(engine: sa.Engine, installed: set[Item]) -> list[str]:
    """Drop what was added since ``installed`` (triggers, columns, relations, types,
    schemas); what differed, said in words (an object taken away is only said: there is
    no telling how to make it again)."""
    now = shape(engine)
    added, gone = now - installed, installed - now
    if not added and not gone:
        return []
    order = {"trigger": 0, "column": 1, "relation": 2, "type": 3, "schema": 4}
    statements: list[str] = []
    for kind, schema, name, detail in sorted(added, key=lambda i: order[i[0]]):
        if kind == "trigger":
            statements.append(
                f"DROP TRIGGER IF EXISTS {_quoted(detail)} ON {_quoted(schema, name)}"
            )
        elif kind == "column" and ("relation", schema, name, "r") in installed:
            statements.append(
                f"ALTER TABLE {_quoted(schema, name)} DROP COLUMN IF EXISTS {_quoted(detail)}"
            )
        elif kind == "relation":
            what = {"v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE"}.get(
                detail, "TABLE"
            )
            statements.append(f"DROP {what} IF EXISTS {_quoted(schema, name)} CASCADE")
        elif kind == "type":
            statements.append(f"DROP TYPE IF EXISTS {_quoted(schema, name)} CASCADE")
        elif kind == "schema":
            statements.append(f"DROP SCHEMA IF EXISTS {_quoted(schema)} CASCADE")
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    # A relation's columns and triggers go without saying where the relation is said.
    return [
        f"{verb} {_said(i)}"
        for verb, items in (("added", added), ("took away", gone))
        for i in sorted(items)
        if i[0] not in ("column", "trigger") or ("relation", *i[1:3]) not in {r[:3] for r in items}
    ]


def _said(item: Any) -> str:
    kind, schema, name, detail = item
    if kind == "schema":
        return f"schema {schema}"
    if kind in ("column", "trigger"):
        return f"{kind} {detail} of {schema}.{name}"
    return f"{kind} {schema}.{name}"
