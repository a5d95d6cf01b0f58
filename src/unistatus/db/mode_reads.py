"""The mode as the database stores it: each system's control key (``mode.<SYSTEM>``,
else the global key, else :data:`DEFAULT_MODE`), read on a connection
(:func:`read_mode`, :func:`read_modes`) or as SQL (:func:`stored_mode`), and its logged
changes (:func:`mode_changes`).

Split from :mod:`unistatus.db.control`, which switches the mode (and logs it) from these
reads; the layout of the keys is described there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.db.system_keys import SYSTEMS, system_key, system_keys
from unistatus.db.tables import control_log, migration_control
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import ModeError

__all__ = [
    "DEFAULT_MODE",
    "MIXED",
    "MODE_KEY",
    "common_mode",
    "describe_modes",
    "last_mode_change_at",
    "mode_changes",
    "mode_is",
    "mode_key",
    "mode_keys",
    "mode_summary",
    "read_mode",
    "read_modes",
    "read_value",
    "stored_mode",
]

MODE_KEY = "mode"
DEFAULT_MODE = DualWriteMode.LEGACY_ONLY
MIXED = "mixed"  # what `mode get` shows (and --json's "mode" holds) while systems differ


def mode_key(system: LegacySystemType) -> str:
    """The control key of ``system``'s mode (``mode.CASHOUT``)."""
    return system_key(MODE_KEY, system)


def mode_keys(system: LegacySystemType | None = None) -> tuple[str, ...]:
    """The control keys that logged changes of ``system``'s mode (None: any system's):
    its own and the global key (which set every system's before revision 0015)."""
    return system_keys(MODE_KEY, system)


def read_value(conn: sa.Connection, key: str) -> str | None:
    return conn.execute(
        sa.select(migration_control.c.value).where(migration_control.c.key == key)
    ).scalar_one_or_none()


def read_modes(conn: sa.Connection) -> dict[LegacySystemType, DualWriteMode]:
    """Every system's mode, in one query (a system without its key: the global key's,
    else :data:`DEFAULT_MODE`)."""
    keys = {mode_key(system): system for system in SYSTEMS}
    rows: dict[str, str] = {
        str(k): str(v)
        for k, v in conn.execute(
            sa.select(migration_control.c.key, migration_control.c.value).where(
                migration_control.c.key.in_([MODE_KEY, *keys])
            )
        )
    }
    fallback = DualWriteMode(rows[MODE_KEY]) if rows.get(MODE_KEY) else DEFAULT_MODE
    return {
        system: DualWriteMode(rows[key]) if rows.get(key) else fallback
        for key, system in keys.items()
    }


def common_mode(modes: dict[LegacySystemType, DualWriteMode]) -> DualWriteMode | None:
    """The mode every system is in, or None while they differ."""
    distinct = set(modes.values())
    return distinct.pop() if len(distinct) == 1 else None


def mode_summary(modes: dict[LegacySystemType, DualWriteMode]) -> str:
    """The mode every system is in, or :data:`MIXED` (what `mode get` prints first)."""
    common = common_mode(modes)
    return common.value if common is not None else MIXED


def describe_modes(modes: dict[LegacySystemType, DualWriteMode]) -> str:
    return ", ".join(f"{system.value} {mode.value}" for system, mode in modes.items())


def read_mode(conn: sa.Connection, system: LegacySystemType | None = None) -> DualWriteMode:
    """``system``'s mode; with None, the mode of every system (ModeError if they differ:
    call :func:`read_modes` where systems may be in different modes)."""
    if system is not None:
        value = read_value(conn, mode_key(system)) or read_value(conn, MODE_KEY)
        return DualWriteMode(value) if value else DEFAULT_MODE
    modes = read_modes(conn)
    common = common_mode(modes)
    if common is None:
        hint = "a command of one system takes --system; `unistatus mode set` puts all in one"
        raise ModeError(f"the systems are in different modes ({describe_modes(modes)}): {hint}")
    return common


def mode_is(mode: DualWriteMode, system: LegacySystemType) -> sa.ColumnElement[bool]:
    """SQL guard: true while ``system``'s stored mode is ``mode`` (missing = LEGACY_ONLY)."""
    return stored_mode(system) == mode.value


def stored_mode(system: LegacySystemType | sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """``system``'s stored mode as SQL, as :func:`read_mode` reads it: its key, else
    the global key, else LEGACY_ONLY.

    ``system`` is a system or a SQL expression of its value (a bound parameter, a
    column): the key is ``'mode.' || system``.
    """
    key: Any = (
        mode_key(system)
        if isinstance(system, (LegacySystemType, str))
        else sa.literal(f"{MODE_KEY}.") + system
    )

    def value_of(k: Any) -> sa.ScalarSelect[Any]:
        q = sa.select(migration_control.c.value).where(migration_control.c.key == k)
        return q.scalar_subquery()

    return sa.func.coalesce(value_of(key), value_of(MODE_KEY), DEFAULT_MODE.value)


def last_mode_change_at(conn: sa.Connection, system: LegacySystemType | None) -> datetime | None:
    """When ``system``'s mode (None: any system's) was last written (a switch, a
    rollback; None: never). Counts the global key's log rows too (before revision 0015
    one switch set every system's mode)."""
    at = conn.execute(
        sa.select(sa.func.max(control_log.c.created_at)).where(
            control_log.c.key.in_(mode_keys(system))
        )
    ).scalar_one_or_none()
    return as_utc(at)


def mode_changes(
    conn: sa.Connection, system: LegacySystemType
) -> list[tuple[datetime, DualWriteMode]]:
    """(when, new mode) of every logged change of ``system``'s mode, oldest first (the
    global key's rows from before revision 0015 included)."""
    rows = conn.execute(
        sa.select(control_log.c.created_at, control_log.c.new_value)
        .where(control_log.c.key.in_(mode_keys(system)))
        .order_by(control_log.c.id)
    ).all()
    return [(as_utc(at) or utcnow(), DualWriteMode(value)) for at, value in rows]
