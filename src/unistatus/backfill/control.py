"""Pause and resume: a control flag every running worker reads before its next batch."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.db.control import read_value, write_value
from unistatus.db.dialect import ops_for
from unistatus.db.failures import storage_errors
from unistatus.db.tables import migration_control
from unistatus.domain.statuses import LegacySystemType

PAUSE_KEY = "backfill.paused"


def pause_key(system: LegacySystemType | None) -> str:
    """The flag of ``system``'s backfill (``backfill.paused.CASHOUT``); None: of all."""
    return PAUSE_KEY if system is None else f"{PAUSE_KEY}.{system.value}"


def is_paused(conn: sa.Connection, system: LegacySystemType | None = None) -> bool:
    """Whether the backfill is paused: all of it, or (``system``) that system's."""
    keys = [PAUSE_KEY] if system is None else [PAUSE_KEY, pause_key(system)]
    q = sa.select(migration_control.c.value).where(migration_control.c.key.in_(keys))
    return "true" in set(conn.execute(q).scalars())


def paused_clause(system: LegacySystemType | None = None) -> sa.ColumnElement[bool]:
    """SQL: true while the backfill (of ``system``, when given) is paused (to fold the
    check into another query)."""
    # Plain comparisons, no IN list: the batch statements are compiled once
    # (unistatus.db.prepared), with no expanding parameter to fill in.
    key = migration_control.c.key
    which = (
        key == PAUSE_KEY if system is None else sa.or_(key == PAUSE_KEY, key == pause_key(system))
    )
    return sa.select(sa.literal(1)).where(which, migration_control.c.value == "true").exists()


def _set(
    engine: sa.Engine, paused: bool, actor: str, reason: str, system: LegacySystemType | None
) -> dict[str, Any]:
    ops = ops_for(engine)
    value = "true" if paused else "false"
    with storage_errors("cannot change the backfill pause flag"), ops.write_transaction() as conn:
        change = write_value(conn, pause_key(system), value, actor=actor, reason=reason)
        if system is None and not paused:
            # Resuming all of it resumes each system paused on its own too.
            for one in LegacySystemType:
                if read_value(conn, pause_key(one)) == "true":
                    write_value(conn, pause_key(one), value, actor=actor, reason=reason)
    return {"paused": paused, **change.as_dict()}


def pause(
    engine: sa.Engine, *, actor: str, reason: str, system: LegacySystemType | None = None
) -> dict[str, Any]:
    """Hold every running backfill worker before its next batch (they wait, not exit):
    of every system, or (``system``) of that system only."""
    return _set(engine, True, actor, reason, system)


def resume(
    engine: sa.Engine, *, actor: str, reason: str, system: LegacySystemType | None = None
) -> dict[str, Any]:
    """Let paused backfill workers continue (every system's, or ``system``'s)."""
    return _set(engine, False, actor, reason, system)
