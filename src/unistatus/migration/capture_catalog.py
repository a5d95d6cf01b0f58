"""This installation's capture objects as the catalog has them now: its triggers and
(PostgreSQL) functions (:func:`installed`), their definitions
(:func:`installed_definitions`), the schema they are in (:func:`own_schema`), and the
other installations whose capture triggers are on tables here
(:func:`other_installations`).

Split from :mod:`unistatus.migration.capture`; what the objects are called:
:mod:`unistatus.migration.capture_names`.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.binding import schema_of
from unistatus.db.search_path import search_path
from unistatus.migration.capture_names import PREFIX, Trigger, function_names

__all__ = ["installed", "installed_definitions", "other_installations", "own_schema"]

# PostgreSQL: this installation's capture functions (by name, in its schema) and the
# triggers that call them; another installation's (in another schema) are not ours.
_PG_OURS = "p.pronamespace = CAST(:schema AS regnamespace) AND p.proname IN :names"
_PG_FUNCTIONS = sa.text(
    f"SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p WHERE {_PG_OURS} ORDER BY 1"
).bindparams(sa.bindparam("names", expanding=True))
# tgenabled 'D': disabled (ALTER TABLE ... DISABLE TRIGGER, pg_restore --disable-triggers);
# 'O' and 'A' fire in an ordinary session, 'R' only under session_replication_role replica.
_PG_TRIGGERS = sa.text(
    "SELECT t.tgname, c.relname, t.tgrelid::regclass::text, t.tgenabled IN ('D', 'R') "
    "FROM pg_catalog.pg_trigger t "
    "JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid "
    "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
    f"WHERE NOT t.tgisinternal AND {_PG_OURS} ORDER BY 1, 2"
).bindparams(sa.bindparam("names", expanding=True))


# The schemas of other installations whose capture triggers are on a table (PostgreSQL).
_PG_OTHERS = sa.text(
    "SELECT DISTINCT n.nspname FROM pg_catalog.pg_trigger t "
    "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
    "WHERE NOT t.tgisinternal AND p.proname IN :names "
    "AND p.pronamespace <> CAST(:schema AS regnamespace) ORDER BY 1"
).bindparams(sa.bindparam("names", expanding=True))


def other_installations(engine: sa.Engine) -> list[str]:
    """The schemas of the other installations whose capture triggers are on tables here."""
    try:
        with engine.connect() as conn:
            where = {"schema": own_schema(conn), "names": function_names()}
            return list(conn.execute(_PG_OTHERS, where).scalars())
    except sa.exc.DBAPIError:
        return []


def installed(conn: sa.Connection) -> tuple[list[Trigger], list[str]]:
    """This installation's capture triggers and (PostgreSQL) functions, in the catalog now."""
    if conn.dialect.name == "postgresql":
        where = {"schema": own_schema(conn), "names": function_names()}
        triggers = conn.execute(_PG_TRIGGERS, where).all()
        functions = conn.execute(_PG_FUNCTIONS, where).scalars()
        found = [Trigger(name, table, on, bool(off)) for name, table, on, off in triggers]
        return found, list(functions)
    like = PREFIX.replace("_", "\\_") + "%"
    rows = conn.execute(
        sa.text(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' "
            "AND name LIKE :like ESCAPE '\\' ORDER BY 1"
        ),
        {"like": like},
    ).all()
    return [Trigger(name, table) for name, table in rows], []


_PG_DEFINITIONS = sa.text(
    f"SELECT p.proname, p.prosrc FROM pg_catalog.pg_proc p WHERE {_PG_OURS}"
).bindparams(sa.bindparam("names", expanding=True))


def installed_definitions(conn: sa.Connection) -> dict[str, str]:
    """The definitions in the catalog now, by name: this installation's capture
    functions' (PostgreSQL), every trigger's (SQLite)."""
    if conn.dialect.name == "postgresql":
        where = {"schema": own_schema(conn), "names": function_names()}
        rows = conn.execute(_PG_DEFINITIONS, where)
    else:
        rows = conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))
    return {str(name): str(text) for name, text in rows}


def own_schema(conn: sa.Connection) -> str:
    """Where our tables are (PostgreSQL): the ``schema`` setting's, or (the default
    layout, tables named bare) the schema the search_path finds them in (never the
    compatibility views' schema: :mod:`unistatus.db.search_path`)."""
    schema = schema_of(conn)
    if schema is not None:
        return schema
    where = search_path(conn)
    return str(where.found_in or where.current)
