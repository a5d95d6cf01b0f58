"""The database refuses a status for real: a constraint (PostgreSQL) or triggers (SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from conftest import Database


@contextmanager
def refuse(db: Database, table: str, status: str) -> Iterator[str]:
    """Make the database refuse ``status`` in ``table``, inserted or updated to (a real
    constraint, dropped at the end); yields its name, which the database's error carries."""
    name = f"t_no_{status.lower()}"
    if db.backend == "postgres":
        ddl = [f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK (status <> '{status}') NOT VALID"]
        undo = [f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"]
    else:
        body = f"WHEN NEW.status = '{status}' BEGIN SELECT RAISE(ABORT, '{name}'); END"
        ddl = [
            f"CREATE TRIGGER {name} BEFORE UPDATE ON {table} {body}",
            f"CREATE TRIGGER {name}_insert BEFORE INSERT ON {table} {body}",
        ]
        undo = [f"DROP TRIGGER IF EXISTS {name}", f"DROP TRIGGER IF EXISTS {name}_insert"]
    with db.engine.begin() as conn:
        for sql in ddl:
            conn.exec_driver_sql(sql)
    try:
        yield name
    finally:
        with db.engine.begin() as conn:
            for sql in undo:
                conn.exec_driver_sql(sql)
