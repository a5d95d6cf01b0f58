"""The application's own columns on a legacy table, added for a test and dropped after;
a legacy table narrower than the unified row (:func:`narrow_payouts`), an adapter on it
and its rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import snapshot
from unistatus.adapter.core import DualWriteAdapter
from unistatus.config import Settings, load_settings
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode


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
            # Before a table-level key, else last (a key declared inline: AUTOINCREMENT).
            if "PRIMARY KEY (" in create:
                made = create.replace("PRIMARY KEY (", f"{listed}, PRIMARY KEY (", 1)
            else:
                end = create.rindex(")")
                made = f"{create[:end].rstrip()}, {listed}{create[end:]}"
            conn.exec_driver_sql(made)
    try:
        yield
    finally:
        if db.backend == "postgres":
            with db.engine.begin() as conn:
                dropped = ", ".join(f"DROP COLUMN IF EXISTS {name}" for name in columns)
                conn.exec_driver_sql(f"ALTER TABLE {table} {dropped}")


@contextmanager
def narrow_payouts(db: Database, status: str = "VARCHAR(64)") -> Iterator[Settings]:
    """The cashout system's legacy table ``payouts``, narrower than the unified row, and
    settings that name it (dropped afterwards: the PostgreSQL database is shared);
    ``status``: its status column's type."""
    pg = db.backend == "postgres"
    key = "id SERIAL PRIMARY KEY" if pg else "id INTEGER PRIMARY KEY AUTOINCREMENT"
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE payouts ({key}, status {status}, owner_id INTEGER NOT NULL, "
            "amount NUMERIC(12, 2) NOT NULL, currency VARCHAR(3) NOT NULL, "
            "created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL)"
        )
    spec = {"table": "payouts", "user_id": "owner_id"}
    try:
        yield load_settings(
            database_url=db.url, schema=db.settings.schema, legacy_tables={"CASHOUT": spec}
        )
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE payouts")


def payouts_adapter(db: Database, settings: Settings, mode: DualWriteMode) -> DualWriteAdapter:
    """An adapter of ``settings`` (:func:`narrow_payouts`'), every system in ``mode``."""
    set_mode(db.engine, mode, reason="test", actor="test", force=True)
    a = DualWriteAdapter(db.engine, settings=settings, record_stats=False)
    a.modes.refresh()
    return a


def payouts_rows(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT * FROM payouts ORDER BY id")).all())


def refused_alone_and_in_callers_transaction(
    db: Database, write: Callable[..., object], error: type[Exception], match: str
) -> None:
    """``write()`` is refused with ``error`` in the adapter's own transaction and in the
    caller's (``write(connection=...)``, which stays usable after it), and neither wrote
    anything (unistatus's rows and the payouts' alike)."""
    before = snapshot(db), payouts_rows(db)
    with pytest.raises(error, match=match):
        write()
    with db.engine.connect() as conn, conn.begin():
        with pytest.raises(error, match=match):
            write(connection=conn)
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1  # still usable
    assert (snapshot(db), payouts_rows(db)) == before
