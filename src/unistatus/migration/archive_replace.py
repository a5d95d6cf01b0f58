"""``archive restore --replace``: the target's rows of each archived table deleted, and
no other table's rows.

PostgreSQL's ``DELETE FROM t`` also deletes the rows of the tables inheriting from
``t`` (not partitions: those hold ``t``'s own rows), and, through a foreign key ``ON
DELETE CASCADE`` (or ``SET NULL``, ``SET DEFAULT``), changes the rows of the tables that
refer to ``t``: a restore into a scratch database emptied a notes table and moved a
child table's rows into the parent (found by a probe). Either is refused, naming the
table, before anything is deleted (a plain reference refuses the delete in the
database's own words); a child table's rows are read as the parent's too (by the
verification after the restore, as by an export), so it cannot stay beside them.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.errors import InputError

# Foreign keys referring to the table that change the referring rows on a delete.
_CHANGING_REFERENCES = sa.text(
    "SELECT c.conrelid::regclass::text AS referring, c.conname, c.confdeltype "
    "FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = CAST(:table AS regclass) "
    "AND c.conrelid <> c.confrelid AND c.confdeltype IN ('c', 'n', 'd') ORDER BY 1, 2"
)
_ON_DELETE = {"c": "ON DELETE CASCADE", "n": "ON DELETE SET NULL", "d": "ON DELETE SET DEFAULT"}
# Tables inheriting from the table (partitions are the table's own rows).
_CHILDREN = sa.text(
    "SELECT i.inhrelid::regclass::text AS child FROM pg_inherits i "
    "JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = CAST(:table AS regclass) AND NOT c.relispartition ORDER BY 1"
)


def refuse_changing_references(conn: sa.Connection, tables: list[sa.Table]) -> None:
    """InputError when deleting the rows of ``tables`` would change another table's."""
    if conn.dialect.name != "postgresql":
        return  # SQLite: a cascade needs PRAGMA foreign_keys, which unistatus leaves off
    ours = {_name(conn, t) for t in tables}
    found = []
    for table in tables:
        named = {"table": _name(conn, table)}
        found += [
            f"{r.referring} ({r.conname}, {_ON_DELETE[r.confdeltype]} on {table.name})"
            for r in conn.execute(_CHANGING_REFERENCES, named)
            if r.referring not in ours
        ]
        found += [
            f"{r.child} (inheriting from {table.name})" for r in conn.execute(_CHILDREN, named)
        ]
    if found:
        raise InputError(
            "--replace would delete the archived tables' rows, and with them change or "
            f"delete those of {'; '.join(found)}; nothing restored. Restore into a database "
            "without them (a scratch database)"
        )


def _name(conn: sa.Connection, table: sa.Table) -> str:
    return conn.dialect.identifier_preparer.format_table(table)
