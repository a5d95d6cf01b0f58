"""What of the application's would stop a legacy status column from being dropped.

PostgreSQL refuses ``ALTER TABLE ... DROP COLUMN`` (without CASCADE) while an object
depends on the column normally (``pg_depend.deptype = 'n'``): a view or a materialized
view (through its rewrite rule), a rule, a trigger with ``UPDATE OF`` it, a policy, a
foreign key of another table that references it. What the drop takes with the column
(its DEFAULT, its indexes and the constraints of its own table, a CHECK's dependency
normal though it is) does not stop it. The column of a table under the legacy table
counts too (the drop recurses to its partitions and inheriting tables).

SQLite drops a column by copying its table (create, copy, drop, rename), and the rename
re-reads every view and every other table's trigger: one that names the table fails it
("error in view ...: no such table"), whatever columns it reads. The table's own
triggers go with the old table; the retirement creates them again after the copy, in
its transaction (revision 0006), all but one that names the status column: SQLite
would take it back and fail each write it fires on ("no such column"), so it is refused
too (:func:`sqlite_triggers_naming`).

A PostgreSQL trigger function's body is not a dependency: PL/pgSQL reads ``NEW.status``
by name when it runs, so a trigger whose function reads the column (``IF NEW.status IS
DISTINCT FROM OLD.status``) does not stop the drop, and after it every write it fires on
fails ('record "new" has no field "status"'). The triggers on the table (and the tables
under it) whose function's source names ``NEW.<column>`` or ``OLD.<column>`` (case
aside, quoted or not) are refused too (:func:`pg_triggers_reading`); not the capture's
own, which the retirement drops first.

Used by the retirement's gates (:func:`unistatus.migration.retire.blockers`), so that
they refuse, naming them, before anything is touched.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from unistatus.db.legacy_tree import TREE

__all__ = ["drop_column_dependents", "names", "pg_triggers_reading", "sqlite_triggers_naming"]

# The capture's own triggers name the status columns (``UPDATE OF``); the retirement drops
# them first (:func:`unistatus.migration.capture.release_status_columns_in`).
_CAPTURE_PREFIX = "unistatus\\_capture\\_%"

_PG_DEPENDENTS = sa.text(
    TREE + "SELECT DISTINCT CASE WHEN d.classid = CAST('pg_catalog.pg_rewrite' AS regclass) "
    " THEN (SELECT CASE c.relkind WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view '"
    "  ELSE 'a rule of ' END || CAST(CAST(r.ev_class AS regclass) AS text)"
    "  FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class"
    "  WHERE r.oid = d.objid)"
    " ELSE pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) END AS what "
    "FROM pg_catalog.pg_depend d JOIN rel ON d.refobjid = rel.oid "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
    "WHERE d.refclassid = CAST('pg_catalog.pg_class' AS regclass) AND d.deptype = 'n' "
    "AND a.attname = :col AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t "
    " WHERE d.classid = CAST('pg_catalog.pg_trigger' AS regclass) AND t.oid = d.objid"
    " AND t.tgname LIKE :ours) "
    "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k"
    " WHERE d.classid = CAST('pg_catalog.pg_constraint' AS regclass) AND k.oid = d.objid"
    " AND k.conrelid = d.refobjid) "
    "ORDER BY 1"
)

_PG_TRIGGER_SOURCES = sa.text(
    TREE + "SELECT t.tgname, CAST(CAST(t.tgrelid AS regclass) AS text),"
    " CAST(CAST(t.tgfoid AS regprocedure) AS text), p.prosrc "
    "FROM pg_catalog.pg_trigger t JOIN rel ON t.tgrelid = rel.oid "
    "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
    "WHERE NOT t.tgisinternal AND t.tgname NOT LIKE :ours ORDER BY 2, 1"
)


def drop_column_dependents(conn: sa.Connection, rel: str, table: str, column: str) -> list[str]:
    """What dropping ``column`` of the table ``rel`` (as SQL names it; ``table``: its bare
    name) would fail on, each described (``view public.pending_cashouts``); [] if nothing.
    PostgreSQL: what depends on the column; SQLite: every view, and every other table's
    trigger, that names the table."""
    if conn.dialect.name == "postgresql":
        params = {"rel": rel, "col": column, "ours": _CAPTURE_PREFIX}
        return [str(what) for what in conn.execute(_PG_DEPENDENTS, params).scalars()]
    if conn.dialect.name != "sqlite":
        return []
    found = conn.exec_driver_sql(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE (type = 'view' OR "
        "(type = 'trigger' AND tbl_name <> ? COLLATE NOCASE AND name NOT LIKE 'unistatus\\_%' ESCAPE '\\')) "
        "ORDER BY type DESC, name",
        (table,),
    ).all()
    return [
        f"view {name}" if kind == "view" else f"trigger {name} on {on}"
        for kind, name, on, sql in found
        if sql and names(str(sql), table)
    ]


def pg_triggers_reading(conn: sa.Connection, rel: str, column: str) -> list[str]:
    """PostgreSQL: the application's triggers on the table ``rel`` (as SQL names it) and
    the tables under it whose function's source reads ``NEW.column`` or ``OLD.column``,
    each described (``trigger audit on cashouts (function audit_fn())``); [] elsewhere."""
    if conn.dialect.name != "postgresql":
        return []
    read = re.compile(
        rf'(?<![\w$])(new|old)\s*\.\s*("{re.escape(column)}"|{re.escape(column)}(?![\w$]))',
        re.IGNORECASE,
    )
    found = conn.execute(_PG_TRIGGER_SOURCES, {"rel": rel, "ours": _CAPTURE_PREFIX}).all()
    return [
        f"trigger {name} on {on} (function {function})"
        for name, on, function, source in found
        if source and read.search(str(source))
    ]


def sqlite_triggers_naming(conn: sa.Connection, table: str, column: str) -> list[str]:
    """SQLite: the application's triggers on ``table`` whose SQL names ``column`` (its
    event, its WHEN, its body), sorted: after the drop's table copy they would fail each
    write they fire on. [] elsewhere (PostgreSQL keeps a table's triggers through a
    drop; one that depends on the column is among :func:`drop_column_dependents`)."""
    if conn.dialect.name != "sqlite":
        return []
    found = conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
        "AND tbl_name = ? COLLATE NOCASE "
        "AND name NOT LIKE 'unistatus\\_%' ESCAPE '\\' ORDER BY name",
        (table,),
    ).all()
    return [str(name) for name, sql in found if sql and names(str(sql), column)]


def names(sql: str, name: str) -> bool:
    """Whether ``sql`` names ``name`` as a word, bare or quoted ("cashouts", [cashouts],
    `cashouts`; case aside). A word of a string literal counts too: refused, not missed."""
    return re.search(rf"(?<![\w$]){re.escape(name)}(?![\w$])", sql, re.IGNORECASE) is not None
