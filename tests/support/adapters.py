"""Shared test data helpers (moved from test_adapter.py)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from conftest import Database
from unistatus import (
    DualWriteAdapter,
    DualWriteMode,
)
from unistatus.db.catalog import metadata
from unistatus.db.control import set_mode

# The legacy tables and every table unistatus owns (db.catalog imports them all), but
# the operation statistics: every operation is counted by design, refused ones included.
TABLES = [
    "cashouts",
    "escrows",
    "exchanges",
    *sorted(t for t in metadata.tables if t != "unistatus_operation_stats"),
]


def adapter_on(db: Database, engine: sa.Engine, **kw: Any) -> DualWriteAdapter:
    """An adapter on the application's own ``engine`` (its pool), no statistics;
    ``settings`` default: the database's."""
    settings = kw.pop("settings", db.settings)
    adapter = DualWriteAdapter(engine, settings=settings, record_stats=False, **kw)
    adapter.modes.refresh()
    return adapter


def adapter_in(db: Database, mode: DualWriteMode, **kw: Any) -> DualWriteAdapter:
    # Forced: tests seed legacy rows without unified ones on purpose (unbackfilled rows).
    set_mode(db.engine, mode, reason="test", actor="test", force=True)
    adapter = DualWriteAdapter(db.engine, settings=db.settings, **kw)
    adapter.modes.refresh()
    assert adapter.mode is mode
    return adapter


def snapshot(db: Database) -> dict[str, list[str]]:
    """Every row of every table, to prove that a refused write changed nothing.

    Except the operation statistics: every adapter records them by default, refused and
    no-op operations included (by design, see the README), and flushes them on its own
    schedule; what is counted is tested where it is counted.
    """
    out = {}
    with db.engine.connect() as conn:
        for name in TABLES:
            rows = conn.execute(sa.text(f"SELECT * FROM {db.table(name)}")).all()
            out[name] = sorted(repr(tuple(r)) for r in rows)
    return out
