"""The application's own columns on a legacy table, added for a test and dropped after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from conftest import Database


@contextmanager
def legacy_columns(
    db: Database, columns: dict[str, str], table: str = "cashouts"
) -> Iterator[None]:
    """``table`` gets ``columns`` (name: SQL type and constraints) for the block.

    PostgreSQL adds them (and drops them again: its database is shared by the session).
    SQLite adds no NOT NULL column without a default, so the table is made again with
    them (its database is the test's own); call it while the table is empty.
    """
    with db.engine.begin() as conn:
        if db.backend == "postgres":
            added = ", ".join(f"ADD COLUMN {name} {ddl}" for name, ddl in columns.items())
            conn.exec_driver_sql(f"ALTER TABLE {table} {added}")
        else:
            create = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t",
                {"t": table},
            ).scalar_one()
            assert "PRIMARY KEY" in create
            listed = ", ".join(f"{name} {ddl}" for name, ddl in columns.items())
            conn.exec_driver_sql(f"DROP TABLE {table}")
            conn.exec_driver_sql(create.replace("PRIMARY KEY", f"{listed}, PRIMARY KEY", 1))
    try:
        yield
    finally:
        if db.backend == "postgres":
            with db.engine.begin() as conn:
                dropped = ", ".join(f"DROP COLUMN IF EXISTS {name}" for name in columns)
                conn.exec_driver_sql(f"ALTER TABLE {table} {dropped}")
