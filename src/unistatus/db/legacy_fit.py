"""What the gate into phase 1 asks of a legacy table beyond what every command checks
(:func:`unistatus.db.legacy.resolve_legacy_tables`): that dual write can run on it.

- Its id names one row. A UTX id is derived from it, and each write finds its row by it
  (``WHERE id = :id``): a primary key or unique index on the id alone (a partial one
  excepted) makes it so. ``PRIMARY KEY (id, created_at)``, as a table partitioned by
  date must have, does not: two rows may share an id, and then one status change wrote
  both, and their one unified row took either's amount (found by a probe).
- Its status column compares exactly. Under a non-deterministic (case-insensitive)
  collation the database's mapping took 'pending' for PENDING, the check said 100%
  consistent, and the adapter, comparing exactly, refused every change of those rows.
- Its status column holds every status unistatus writes (``varchar(12)`` cannot hold
  ``USER_CONFIRM_PENDING``): found at the first such write otherwise.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.db.legacy import LegacyTable, status_problem
from unistatus.domain.mapping import canonical_legacy_values

_COLLATION = sa.text(
    "SELECT c.collname, c.collisdeterministic FROM pg_attribute a "
    "JOIN pg_collation c ON c.oid = a.attcollation "
    "WHERE a.attrelid = CAST(:table AS regclass) AND a.attname = :column"
)


def unfit(conn: sa.Connection, lt: LegacyTable, *, keyed: bool = True) -> list[str]:
    """Why dual write cannot run on ``lt`` (nothing: it can). ``keyed`` False: a view or a
    foreign table, whose keys are its base table's (not judged here)."""
    problems: list[str] = []
    if keyed and not id_unique_alone(conn, lt.table, lt.id.name):
        problems.append(
            f"{lt.name}.{lt.id.name} is not unique on its own (no primary key or unique "
            "index on it alone): two rows with one id would be one transaction, and a "
            "status change of one would write both. Add a unique index on it (a table "
            "partitioned by date cannot have one: partition it by the id)"
        )
    if lt.status is None:
        return problems
    collation = _inexact_collation(conn, lt)
    if collation is not None:
        problems.append(
            f"{lt.name}.{lt.status.name} compares under the non-deterministic collation "
            f"{collation}: the database would take 'pending' for PENDING where unistatus "
            'compares exactly. Give the column a deterministic collation (COLLATE "C")'
        )
    for value in canonical_legacy_values(lt.system):
        problem = status_problem(lt.status, value)
        if problem is not None:
            problems.append(f"{lt.name}.{lt.status.name} {problem}: widen it")
            break
    return problems


def id_unique_alone(conn: sa.Connection, table: sa.Table, id_name: str) -> bool:
    """Whether a constraint or index of ``table`` keeps ``id_name`` unique on its own."""
    inspector = sa.inspect(conn)
    name, schema = table.name, table.schema
    if inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") == [id_name]:
        return True
    for unique in inspector.get_unique_constraints(name, schema=schema):
        if unique.get("column_names") == [id_name]:
            return True
    return any(_unique_on(index, id_name) for index in inspector.get_indexes(name, schema=schema))


def _unique_on(index: Any, id_name: str) -> bool:
    options = index.get("dialect_options") or {}
    partial = options.get("postgresql_where") or options.get("sqlite_where")
    return bool(index.get("unique")) and index.get("column_names") == [id_name] and not partial


def _inexact_collation(conn: sa.Connection, lt: LegacyTable) -> str | None:
    if conn.dialect.name != "postgresql" or lt.status is None:
        return None
    preparer = conn.dialect.identifier_preparer
    table = preparer.format_table(lt.table)
    row = conn.execute(_COLLATION, {"table": table, "column": lt.status.name}).first()
    return None if row is None or row.collisdeterministic else str(row.collname)
