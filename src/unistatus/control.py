"""The migration's control state (mode, later phase) in the database, with a log.

Every process reads the mode from here; a switch made by any process reaches every
running adapter within ``mode_refresh_seconds`` (see :class:`ModeWatcher`). On
PostgreSQL a switch takes the exclusive mode lock, so it waits for in-flight adapter
writes and no write can commit under the old mode after the switch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.db.dialect import DialectOps, ops_for
from unistatus.db.tables import control_log, migration_control, pending_legacy_changes
from unistatus.errors import InputError, ModeError, StorageError
from unistatus.statuses import DualWriteMode

MODE_KEY = "mode"
DEFAULT_MODE = DualWriteMode.LEGACY_ONLY


@dataclass(frozen=True)
class ControlChange:
    key: str
    old_value: str | None
    new_value: str
    actor: str
    reason: str
    created_at: datetime
    metadata: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "old_value": self.old_value,
            "new_value": self.new_value,
            "actor": self.actor,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "metadata": self.metadata,
        }


def read_value(conn: sa.Connection, key: str) -> str | None:
    return conn.execute(
        sa.select(migration_control.c.value).where(migration_control.c.key == key)
    ).scalar_one_or_none()


def read_mode(conn: sa.Connection) -> DualWriteMode:
    value = read_value(conn, MODE_KEY)
    return DualWriteMode(value) if value else DEFAULT_MODE


def mode_is(mode: DualWriteMode) -> sa.ColumnElement[bool]:
    """SQL guard: true while the stored mode is ``mode`` (missing row = LEGACY_ONLY)."""
    stored = (
        sa.select(migration_control.c.value)
        .where(migration_control.c.key == MODE_KEY)
        .scalar_subquery()
    )
    return sa.func.coalesce(stored, DEFAULT_MODE.value) == mode.value


def write_value(
    conn: sa.Connection,
    key: str,
    value: str,
    *,
    actor: str,
    reason: str,
    metadata: dict[str, Any] | None = None,
) -> ControlChange:
    """Set a control value and log the change, inside the caller's transaction."""
    if not reason or not reason.strip():
        raise InputError(f"changing {key} needs a reason (--reason)")
    if not actor or not actor.strip():
        raise InputError("an actor is required")
    now = utcnow()
    old = read_value(conn, key)
    if old is None:
        conn.execute(
            sa.insert(migration_control).values(
                key=key, value=value, updated_at=now, updated_by=actor
            )
        )
    else:
        conn.execute(
            sa.update(migration_control)
            .where(migration_control.c.key == key)
            .values(value=value, updated_at=now, updated_by=actor)
        )
    conn.execute(
        sa.insert(control_log).values(
            key=key,
            old_value=old,
            new_value=value,
            actor=actor,
            reason=reason,
            meta=metadata,
            created_at=now,
        )
    )
    return ControlChange(key, old, value, actor, reason, now, metadata)


def set_mode(
    engine: sa.Engine,
    mode: DualWriteMode | str,
    *,
    reason: str,
    actor: str = "cli",
    metadata: dict[str, Any] | None = None,
    ops: DialectOps | None = None,
) -> ControlChange:
    """Switch the write mode for every adapter, after in-flight writes finish."""
    new = DualWriteMode.parse(mode)
    ops = ops or ops_for(engine)
    try:
        with ops.write_transaction() as conn:
            ops.mode_exclusive_lock(conn)
            _refuse_stale_legacy(conn, new)
            return write_value(
                conn, MODE_KEY, new.value, actor=actor, reason=reason, metadata=metadata
            )
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot switch mode: {exc.orig}") from None


def _refuse_stale_legacy(conn: sa.Connection, new: DualWriteMode) -> None:
    """Leaving UNIFIED_ONLY by hand would skip the replay: legacy would miss changes."""
    if not new.writes_legacy or read_mode(conn) is not DualWriteMode.UNIFIED_ONLY:
        return
    pending = conn.execute(
        sa.select(sa.func.count())
        .select_from(pending_legacy_changes)
        .where(pending_legacy_changes.c.replayed_at.is_(None))
    ).scalar_one()
    if pending:
        raise ModeError(
            f"{pending} change(s) made in UNIFIED_ONLY are not in legacy yet; switching to "
            f"{new.value} by hand would lose them. Use `unistatus phase rollback` or "
            "`unistatus rollback --emergency`, which replay them first"
        )


def get_mode(engine: sa.Engine) -> DualWriteMode:
    try:
        with engine.connect() as conn:
            return read_mode(conn)
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot read the mode: {exc.orig}") from None


def history(engine: sa.Engine, key: str | None = None, limit: int = 100) -> list[ControlChange]:
    q = sa.select(control_log).order_by(control_log.c.id.desc()).limit(limit)
    if key:
        q = q.where(control_log.c.key == key)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [
        ControlChange(
            r.key,
            r.old_value,
            r.new_value,
            r.actor,
            r.reason,
            as_utc(r.created_at) or utcnow(),
            r.meta,
        )
        for r in rows
    ]


class ModeWatcher:
    """The current mode as this process knows it, re-read at most every ``interval``."""

    def __init__(self, engine: sa.Engine, interval: float = 1.0) -> None:
        self._engine = engine
        self._interval = interval
        self._lock = threading.Lock()
        self._mode: DualWriteMode | None = None
        self._read_at = 0.0

    def get(self) -> DualWriteMode:
        now = time.monotonic()
        if self._mode is not None and now - self._read_at < self._interval:
            return self._mode
        with self._lock:
            if self._mode is None or time.monotonic() - self._read_at >= self._interval:
                self._mode = get_mode(self._engine)
                self._read_at = time.monotonic()
            return self._mode

    def refresh(self) -> DualWriteMode:
        with self._lock:
            self._read_at = 0.0
        return self.get()
