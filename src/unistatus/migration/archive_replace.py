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

import sqlalchemy as sa

from unistatus.errors import InputError

# Foreign keys referring to the table that change the referring rows on a delete, of
# tables not restored with it (compared as tables, not as names: a configured schema
# names them "public.escrows", the catalog "escrows").
_CHANGING_REFERENCES = sa.text(
    "SELECT c.conrelid::regclass::text AS referring, c.conname, c.confdeltype "
    "FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = CAST(:table AS regclass) "
    "AND c.confdeltype IN ('c', 'n', 'd') AND c.conrelid <> ALL "
    "(SELECT CAST(n AS regclass) FROM unnest(CAST(:ours AS text[])) AS n) ORDER BY 1, 2"
)
_ON_DELETE = {"c": "ON DELETE CASCADE", "n": "ON DELETE SET NULL", "d": "ON DELETE SET DEFAULT"}
_SQLITE_CHANGING = {"CASCADE", "SET NULL", "SET DEFAULT"}
# Tables inheriting from the table (partitions are the table's own rows).
_CHILDREN = sa.text(
    "SELECT i.inhrelid::regclass::text AS child FROM pg_inherits i "
    "JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = CAST(:table AS regclass) AND NOT c.relispartition ORDER BY 1"
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
    ours = [_name(conn, t) for t in tables]
    found = []
    for table in tables:
        named = {"table": _name(conn, table), "ours": ours}
        found += [
            f"{r.referring} ({r.conname}, {_ON_DELETE[r.confdeltype]} on {table.name})"
            for r in conn.execute(_CHANGING_REFERENCES, named)
        ]
        found += [
            f"{r.child} (inheriting from {table.name})"
            for r in conn.execute(_CHILDREN, {"table": named["table"]})
        ]
    return found


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


# Foreign keys between the restored tables: (referring, referred), as regclass texts.
_REFERENCES_AMONG = sa.text(
    "SELECT CAST(c.conrelid AS regclass)::text AS referring, "
    "CAST(c.confrelid AS regclass)::text AS referred FROM pg_constraint c "
    "WHERE c.contype = 'f' AND c.conrelid <> c.confrelid "
    "AND c.conrelid = ANY (SELECT CAST(n AS regclass) FROM unnest(CAST(:ours AS text[])) AS n) "
    "AND c.confrelid = ANY (SELECT CAST(n AS regclass) FROM unnest(CAST(:ours AS text[])) AS n)"
)
_AS_REGCLASS = sa.text("SELECT CAST(CAST(:t AS regclass) AS text)")


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
    names = [_name(conn, t) for t in tables]
    shown = [str(conn.execute(_AS_REGCLASS, {"t": n}).scalar_one()) for n in names]
    refers = {(r.referring, r.referred) for r in conn.execute(_REFERENCES_AMONG, {"ours": names})}
    placed: list[int] = []
    while len(placed) < len(order):
        ready = [
            i
            for i in order
            if i not in placed
            and not any((shown[i], shown[j]) in refers for j in order if j not in placed and j != i)
        ]
        if not ready:  # a cycle: the rest as archived
            return placed + [i for i in order if i not in placed]
        placed.append(ready[0])
    return placed
