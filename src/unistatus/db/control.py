"""The migration's control state (mode, later phase) in the database, with a log.

Every process reads the mode from here; a switch made by any process reaches every
running adapter within ``mode_refresh_seconds`` (see :class:`ModeWatcher`). On
PostgreSQL a switch takes the exclusive mode lock, so it waits for in-flight adapter
writes and no write can commit under the old mode after the switch.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings, load_settings
from unistatus.db.binding import has_column
from unistatus.db.dialect import DialectOps, ops_for
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.tables import (
    control_log,
    migration_control,
    pending_legacy_changes,
    unified_transactions,
)
from unistatus.db.tables_check import check_reports
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import InputError, ModeError, StorageError

log = logging.getLogger("unistatus.db.control")
U = unified_transactions

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


def last_mode_change_at(conn: sa.Connection, system: LegacySystemType | None) -> datetime | None:
    """When the mode of ``system`` last changed (a switch, or a rollback's), None if never.

    The one place that knows which control-log keys carry a system's mode: the global
    ``mode`` (every system) and, per system, ``mode.<SYSTEM>``. ``system=None``: any
    system's. A check that started before then measured another state of that system.
    """
    keys = [MODE_KEY]
    if system is None:
        keys_match = sa.or_(control_log.c.key == MODE_KEY, control_log.c.key.like(MODE_KEY + ".%"))
    else:
        keys.append(f"{MODE_KEY}.{LegacySystemType.parse(system).value}")
        keys_match = control_log.c.key.in_(keys)
    q = sa.select(sa.func.max(control_log.c.created_at)).where(keys_match)
    return as_utc(conn.execute(q).scalar_one_or_none())


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
    force: bool = False,
    settings: Settings | None = None,
) -> ControlChange:
    """Switch the write mode for every adapter, after in-flight writes finish.

    Entering a mode that reads unified (DUAL_WRITE_UNIFIED_PRIMARY, UNIFIED_ONLY) is
    refused while unified may be stale (:func:`unified_staleness`), unless ``force``;
    a forced switch records what was stale in the control log. ``settings`` names the
    legacy tables (default: :func:`unistatus.config.load_settings`).
    """
    new = DualWriteMode.parse(mode)
    ops = ops or ops_for(engine)
    try:
        tables = (
            resolve_legacy_tables(engine, settings or load_settings(), require_status=False)
            if new.reads_unified
            else None
        )
        with ops.write_transaction() as conn:
            ops.mode_exclusive_lock(conn)
            # Every writer now waits on this transaction: bound what it does under the
            # lock (the staleness scan), and let the server end it if its client dies.
            ops.bound_exclusive(
                conn,
                statement_ms=SWITCH_STATEMENT_MS,
                lock_ms=SWITCH_LOCK_MS,
                idle_ms=SWITCH_IDLE_MS,
            )
            _refuse_stale_legacy(conn, new)
            if tables is not None:
                stale = unified_staleness(conn, tables)
                if stale is not None and not force:
                    raise ModeError(
                        f"unified may be stale: {stale.describe()}. Entering {new.value} "
                        "would serve those statuses and judge new changes by them. Bring "
                        "unified up to date (`unistatus check`, `unistatus repair`) and "
                        "enter it through the gated `unistatus phase advance`, or pass "
                        "--force with --reason to switch anyway"
                    )
                if stale is not None:
                    log.warning("mode %s forced by %s over %s", new.value, actor, stale.describe())
                    metadata = {**(metadata or {}), "forced_over_stale_unified": stale.as_dict()}
            return write_value(
                conn, MODE_KEY, new.value, actor=actor, reason=reason, metadata=metadata
            )
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"cannot switch mode: {exc.orig}") from None


# Bounds of a mode switch's transaction once it holds the exclusive lock (PostgreSQL).
SWITCH_STATEMENT_MS = 30_000
SWITCH_LOCK_MS = 5_000
SWITCH_IDLE_MS = 10_000

FORCE_RISK = (
    "reads and the transition rules now use unified statuses that miss legacy-only "
    "changes; a change built on them is not replayed over legacy (a rollback keeps it "
    "as a conflict), but until `unistatus check` and `unistatus repair` run, clients "
    "see the stale statuses"
)
# Legacy rows stamped this close to a legacy-only period count as written in it (hosts'
# clocks differ); rows in step with unified are not counted whatever their stamp.
STALE_SLACK = timedelta(seconds=2)


@dataclass(frozen=True)
class Staleness:
    """Legacy rows changed while unified was not written, since it was last verified."""

    verified_by_check: int | None
    verified_at: datetime | None
    since: datetime | None
    rows: dict[str, int]

    def describe(self) -> str:
        per = ", ".join(f"{system} {n}" for system, n in sorted(self.rows.items()))
        when = (
            f"check #{self.verified_by_check} at {self.verified_at.isoformat()}"
            if self.verified_at is not None
            else "never (no consistent full `unistatus check` yet)"
        )
        return (
            f"{sum(self.rows.values())} legacy row(s) ({per}) were written while the mode "
            f"did not write unified, since unified was last verified: {when}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "verified_by_check": self.verified_by_check,
            "verified_at": self.verified_at.isoformat() if self.verified_at else None,
            "since": self.since.isoformat() if self.since else None,
            "rows": dict(self.rows),
            "risk": FORCE_RISK,
        }


def _legacy_only_periods(conn: sa.Connection) -> list[tuple[datetime | None, datetime | None]]:
    """(start, end) of every stretch in a mode not writing unified; None = open end."""
    changes = conn.execute(
        sa.select(control_log.c.created_at, control_log.c.new_value)
        .where(control_log.c.key == MODE_KEY)
        .order_by(control_log.c.id)
    ).all()
    periods: list[tuple[datetime | None, datetime | None]] = []
    start: datetime | None = None
    blind = not DEFAULT_MODE.writes_unified  # before any switch: the default mode
    for at, value in changes:
        now_blind = not DualWriteMode(value).writes_unified
        if blind and not now_blind:
            periods.append((start, as_utc(at)))
        elif now_blind and not blind:
            start = as_utc(at)
        blind = now_blind
    if blind:
        periods.append((start, None))
    return periods


def unified_staleness(
    conn: sa.Connection, tables: dict[LegacySystemType, LegacyTable]
) -> Staleness | None:
    """Legacy-only writes since unified was last verified, or None if there are none.

    Verified = the start of the latest full check (scope ``all``) that found every row
    consistent. Counted = legacy rows stamped within a stretch of a mode that did not
    write unified, after that moment, whose unified row is missing or holds another
    legacy status (a row brought back in step since, e.g. by a repair, is not).
    """
    R = check_reports
    judged = [R.c.scope == "all", R.c.consistent == R.c.total]
    if has_column(conn.engine, R, "complete"):  # revision 0014 (every report before: complete)
        judged.append(R.c.complete.is_(True))
    verified = conn.execute(
        sa.select(R.c.id, R.c.started_at)
        .where(*judged)
        .order_by(R.c.started_at.desc(), R.c.id.desc())
        .limit(1)
    ).first()
    verified_at = as_utc(verified.started_at) if verified is not None else None
    periods = [
        (start, end)
        for start, end in _legacy_only_periods(conn)
        if verified_at is None or end is None or end > verified_at
    ]
    if not periods:
        return None
    rows: dict[str, int] = {}
    for system, lt in tables.items():
        if lt.status is None:
            continue  # retired: legacy holds no status to be out of step with
        stamped = []
        for start, end in periods:
            lower = max(start, verified_at) if start and verified_at else start or verified_at
            bounds = []
            if lower is not None:
                bounds.append(lt.updated_at >= lower - STALE_SLACK)
            if end is not None:
                bounds.append(lt.updated_at <= end + STALE_SLACK)
            stamped.append(sa.and_(sa.true(), *bounds))
        on = sa.and_(U.c.legacy_system == system.value, U.c.legacy_id == lt.id)
        n = conn.execute(
            sa.select(sa.func.count())
            .select_from(lt.table.outerjoin(U, on))
            .where(
                sa.or_(*stamped),
                sa.or_(U.c.id.is_(None), U.c.legacy_status.is_distinct_from(lt.status)),
            )
        ).scalar_one()
        if n:
            rows[system.value] = int(n)
    if not rows:
        return None
    since = periods[0][0]
    if verified_at is not None and (since is None or since < verified_at):
        since = verified_at
    return Staleness(verified.id if verified else None, verified_at, since, rows)


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
