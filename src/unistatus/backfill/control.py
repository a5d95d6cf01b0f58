"""Pause and resume: a control flag every running worker reads before its next batch."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.db.control import read_value, write_value
from unistatus.db.dialect import ops_for
from unistatus.db.failures import storage_errors
from unistatus.db.tables import migration_control

PAUSE_KEY = "backfill.paused"


def is_paused(conn: sa.Connection) -> bool:
    return read_value(conn, PAUSE_KEY) == "true"


def paused_clause() -> sa.ColumnElement[bool]:
    """SQL: true while the backfill is paused (to fold the check into another query)."""
    return (
        sa.select(sa.literal(1))
        .where(migration_control.c.key == PAUSE_KEY, migration_control.c.value == "true")
        .exists()
    )


def _set(engine: sa.Engine, paused: bool, actor: str, reason: str) -> dict[str, Any]:
    ops = ops_for(engine)
    with storage_errors("cannot change the backfill pause flag"), ops.write_transaction() as conn:
        change = write_value(
            conn, PAUSE_KEY, "true" if paused else "false", actor=actor, reason=reason
        )
    return {"paused": paused, **change.as_dict()}


def pause(engine: sa.Engine, *, actor: str, reason: str) -> dict[str, Any]:
    """Hold every running backfill worker before its next batch (they wait, not exit)."""
    return _set(engine, True, actor, reason)


def resume(engine: sa.Engine, *, actor: str, reason: str) -> dict[str, Any]:
    """Let paused backfill workers continue."""
    return _set(engine, False, actor, reason)
