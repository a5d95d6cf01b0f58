"""``archive restore --replace``: the target's rows of each archived table deleted, and
no other table's rows.

``DELETE FROM t`` changes, through a foreign key ``ON DELETE CASCADE`` (or ``SET
NULL``, ``SET DEFAULT``), the rows of the tables that refer to ``t`` (SQLite's too:
unistatus's connections turn its foreign keys on), and on PostgreSQL also deletes the
rows of the tables inheriting from ``t`` (not partitions: those hold ``t``'s own rows): a restore into a scratch database emptied a notes table and moved a
child table's rows into the parent (found by a probe). Either is refused, naming the
table, before anything is deleted (a plain reference refuses the delete in the
database's own words); a child table's rows are read as the parent's too (by the
verification after the restore, as by an export), so it cannot stay beside them.
"""

from __future__ import annotations

import graphlib

import sqlalchemy as sa

from unistatus.errors import InputError

# The restored tables, as relations (compared as tables, not as names: a configured
# schema names them "public.escrows", the catalog "escrows"), numbered from 0.
_OURS = (
    "WITH ours AS (SELECT CAST(n AS regclass) AS rel, i - 1 AS i "
    "FROM unnest(CAST(:ours AS text[])) WITH ORDINALITY AS t(n, i)) "
)
# Foreign keys of other tables referring to ours that change their rows on a delete.
_CHANGING_REFERENCES = sa.text(
    _OURS + "SELECT c.conrelid::regclass::text AS referring, c.conname, c.confdeltype, "
    "o.rel::text AS referred FROM pg_constraint c JOIN ours o ON o.rel = c.confrelid "
    "WHERE c.contype = 'f' AND c.confdeltype IN ('c', 'n', 'd') "
    "AND c.conrelid NOT IN (SELECT rel FROM ours) ORDER BY 1, 2"
)
_ON_DELETE = {"c": "ON DELETE CASCADE", "n": "ON DELETE SET NULL", "d": "ON DELETE SET DEFAULT"}
_SQLITE_CHANGING = {"CASCADE", "SET NULL", "SET DEFAULT"}
# Tables inheriting from ours (partitions are the table's own rows).
_CHILDREN = sa.text(
    _OURS + "SELECT i.inhrelid::regclass::text AS child, o.rel::text AS parent "
    "FROM pg_inherits i JOIN ours o ON o.rel = i.inhparent "
    "JOIN pg_class c ON c.oid = i.inhrelid WHERE NOT c.relispartition ORDER BY 1"
)
# Foreign keys between ours: (referring, referred), by their numbers.
_REFERENCES_AMONG = sa.text(
    _OURS + "SELECT a.i AS referring, b.i AS referred FROM pg_constraint c "
    "JOIN ours a ON a.rel = c.conrelid JOIN ours b ON b.rel = c.confrelid "
    "WHERE c.contype = 'f' AND a.i <> b.i"
)


def refuse_changing_references(conn: sa.Connection, tables: list[sa.Table]) -> None:
    """InputError when deleting the rows of ``tables`` would change another table's."""
    if conn.dialect.name == "postgresql":
        found = _postgresql(conn, tables)
    elif conn.dialect.name == "sqlite":
        found = _sqlite(conn, tables)
    else:
        found = []
    if found:
        raise InputError(
            "--replace would delete the archived tables' rows, and with them change or "
            f"delete those of {'; '.join(found)}; nothing restored. Restore into a database "
            "without them (a scratch database)"
        )


def _postgresql(conn: sa.Connection, tables: list[sa.Table]) -> list[str]:
    ours = {"ours": [_name(conn, t) for t in tables]}
    found = [
        f"{r.referring} ({r.conname}, {_ON_DELETE[r.confdeltype]} on {r.referred})"
        for r in conn.execute(_CHANGING_REFERENCES, ours)
    ]
    return found + [
        f"{r.child} (inheriting from {r.parent})" for r in conn.execute(_CHILDREN, ours)
    ]


def _sqlite(conn: sa.Connection, tables: list[sa.Table]) -> list[str]:
    """SQLite acts on foreign keys where the connection turned them on (unistatus's
    engines do: unistatus.db.engine)."""
    if not conn.exec_driver_sql("PRAGMA foreign_keys").scalar():
        return []
    ours = {t.name.lower() for t in tables}
    others = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").scalars()
    found = []
    for other in [str(name) for name in others if str(name).lower() not in ours]:
        quoted = conn.dialect.identifier_preparer.quote(other)
        for key in conn.exec_driver_sql(f"PRAGMA foreign_key_list({quoted})").mappings():
            target, on_delete = str(key["table"]), str(key["on_delete"]).upper()
            if target.lower() in ours and on_delete in _SQLITE_CHANGING:
                found.append(f"{other} (ON DELETE {on_delete} on {target})")
    return found


def _name(conn: sa.Connection, table: sa.Table) -> str:
    return conn.dialect.identifier_preparer.format_table(table)


def load_order(conn: sa.Connection, tables: list[sa.Table]) -> list[int]:
    """The order to load ``tables`` in once all are emptied: a table another refers to
    first (a row loaded before the row it refers to is refused). SQLite checks its
    foreign keys at the commit instead (``defer_foreign_keys``); a cycle keeps the
    archive's order."""
    order = list(range(len(tables)))
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        return order
    if conn.dialect.name != "postgresql":
        return order
    graph: dict[int, set[int]] = {i: set() for i in order}
    for r in conn.execute(_REFERENCES_AMONG, {"ours": [_name(conn, t) for t in tables]}):
        graph[r.referring].add(r.referred)
    try:
        return list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        return order
