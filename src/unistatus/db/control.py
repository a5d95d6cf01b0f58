"""The migration's control state (mode, later phase) in the database, with a log.

Every process reads the mode from here; a switch made by any process reaches every
running adapter within ``mode_refresh_seconds`` (see
:class:`unistatus.db.mode_watcher.ModeWatcher`). On
PostgreSQL a switch takes the exclusive mode lock, so it waits for in-flight adapter
writes and no write can commit under the old mode after the switch.

The mode is per legacy system: control key ``mode.<SYSTEM>`` (e.g. ``mode.CASHOUT``;
missing = the global key's, else ``DEFAULT_MODE``), read by
:mod:`unistatus.db.mode_reads`. A switch names one system or all of them
(``system=None``), and logs one control-log row per system it changed. The old global
key ``mode`` (``MODE_KEY``) is kept as a summary for readers that predate per-system
modes (revision 0006's re-check, ``unistatus_locked_mode()`` without an argument): it
holds the mode of every system while they agree and is absent while they differ,
written under a lock of its own (:mod:`unistatus.db.system_keys`). Revision 0015 copied
a database's global mode to every system.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings, load_settings
from unistatus.db.binding import connected, has_column
from unistatus.db.connection_limit import connection_limit_error, refused_for_a_limit
from unistatus.db.ddl_wait import lock_holders
from unistatus.db.dialect import DialectOps, ops_for
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.mode_reads import (
    DEFAULT_MODE,
    MIXED,
    MODE_KEY,
    mode_changes,
    mode_key,
    read_mode,
    read_modes,
    read_value,
)
from unistatus.db.queued_legacy import refuse_queued_legacy
from unistatus.db.retry import retry_reason
from unistatus.db.revisions import columns_retired, require_current_schema
from unistatus.db.server_clock import database_now
from unistatus.db.system_keys import system_keys, systems_of, write_summary
from unistatus.db.tables import (
    control_log,
    migration_control,
    pending_legacy_changes,
    unified_transactions,
)
from unistatus.db.tables_check import check_reports
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import InputError, ModeError, StorageError

log = logging.getLogger("unistatus.db.control")
U = unified_transactions


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
    now = database_now(conn)  # the log's times are compared across hosts (server_clock)
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


def write_mode(
    conn: sa.Connection,
    mode: DualWriteMode,
    *,
    system: LegacySystemType | None = None,
    actor: str,
    reason: str,
    metadata: dict[str, Any] | None = None,
) -> list[ControlChange]:
    """Set ``system``'s mode (None: every system's) in the caller's transaction.

    Logs one change per system whose mode changes (none: nothing written), and keeps the
    global key in step: every system's mode while they agree, absent while they differ,
    so a reader of it alone (revision 0006's re-check) never sees a mode some system is
    not in (:func:`unistatus.db.system_keys.write_summary`). The caller holds the mode
    lock (:func:`set_mode` does).
    """
    if not reason or not reason.strip():
        raise InputError(f"changing {MODE_KEY} needs a reason (--reason)")
    # Not an older release's schema: its processes read the global keys alone (split modes).
    require_current_schema(conn, "switching the write mode")
    current = read_modes(conn)
    changes = [
        write_value(conn, mode_key(s), mode.value, actor=actor, reason=reason, metadata=metadata)
        for s in systems_of(system)
        if current[s] is not mode
    ]
    if changes:
        write_summary(conn, MODE_KEY, read_modes, actor)
    return changes


def set_mode(
    engine: sa.Engine,
    mode: DualWriteMode | str,
    *,
    system: LegacySystemType | str | None = None,
    reason: str,
    actor: str = "cli",
    metadata: dict[str, Any] | None = None,
    ops: DialectOps | None = None,
    force: bool = False,
    settings: Settings | None = None,
) -> list[ControlChange]:
    """Switch ``system``'s write mode (None: every system's) for every adapter, after
    that system's in-flight writes finish; returns one change per system changed.

    Entering a mode that reads unified (DUAL_WRITE_UNIFIED_PRIMARY, UNIFIED_ONLY) is
    refused while that system's unified rows may be stale (:func:`unified_staleness`),
    unless ``force``; a forced switch records what was stale in the control log.
    Leaving UNIFIED_ONLY by hand is refused while the system has changes not replayed
    over legacy. ``settings`` names the legacy tables (default:
    :func:`unistatus.config.load_settings`).
    """
    new = DualWriteMode.parse(mode)
    chosen = None if system is None else LegacySystemType.parse(system)
    reason, actor = check_reason(reason), check_actor(actor)
    ops = ops or ops_for(engine)
    # Without settings: the library's default wait (the setting's default too).
    wait = settings.mode_lock_wait_seconds if settings is not None else None
    try:
        tables = (
            resolve_legacy_tables(engine, settings or load_settings(), require_status=False)
            if new.reads_unified
            else None
        )
        with ops.write_transaction() as conn:
            ops.mode_exclusive_lock(conn, chosen, wait_seconds=wait)
            # Every writer now waits on this transaction: bound what it does under the
            # lock (the staleness scan), and let the server end it if its client dies.
            ops.bound_exclusive(
                conn,
                statement_ms=SWITCH_STATEMENT_MS,
                lock_ms=SWITCH_LOCK_MS,
                idle_ms=SWITCH_IDLE_MS,
            )
            current = read_modes(conn)
            moving = [s for s in systems_of(chosen) if current[s] is not new]
            refuse_losing_legacy(conn, new, moving)
            if tables is not None:
                scope = {s: lt for s, lt in tables.items() if s in moving}
                stale = unified_staleness(conn, scope)
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
            return write_mode(
                conn, new, system=chosen, actor=actor, reason=reason, metadata=metadata
            )
    except sa.exc.DBAPIError as exc:
        raise switch_failed(engine, exc) from None


def switch_failed(engine: sa.Engine, exc: sa.exc.DBAPIError) -> StorageError:
    """What a mode switch that the database refused says (nothing changed): behind a
    lock, by whom, where a table lock tells."""
    if retry_reason(exc) == "lock timeout":
        held = lock_holders(engine)
        by = held or (
            "another transaction (the rows of unistatus's control table, or the lock of "
            "its summary: see pg_locks)"
        )
        return StorageError(
            f"cannot switch mode (nothing changed): gave up after {SWITCH_LOCK_MS / 1000:g} s "
            f"waiting for a lock on unistatus's tables, held by {by}. End that "
            "transaction (its application's own, or pg_terminate_backend), then run it "
            "again"
        )
    return StorageError(f"cannot switch mode: {exc.orig}")


def switch_as_dict(
    mode: DualWriteMode, system: LegacySystemType | None, changes: list[ControlChange]
) -> dict[str, Any]:
    """What a switch did, for ``--json`` and the API: the mode, the system asked for
    (None: every system), the systems it changed, their mode before (``mixed`` if they
    differed; the mode itself if none changed), the metadata, and each logged change."""
    olds = {c.old_value or DEFAULT_MODE.value for c in changes}
    return {
        "mode": mode.value,
        "system": system.value if system is not None else None,
        "systems_changed": [c.key.partition(".")[2] for c in changes],
        "old_value": (olds.pop() if len(olds) == 1 else MIXED) if olds else mode.value,
        "new_value": mode.value,
        "metadata": changes[0].metadata if changes else None,
        "changes": [c.as_dict() for c in changes],
    }


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


def _legacy_only_periods(
    conn: sa.Connection, system: LegacySystemType
) -> list[tuple[datetime | None, datetime | None]]:
    """(start, end) of every stretch ``system`` spent in a mode not writing unified;
    None = open end."""
    periods: list[tuple[datetime | None, datetime | None]] = []
    start: datetime | None = None
    blind = not DEFAULT_MODE.writes_unified  # before any switch: the default mode
    for at, mode in mode_changes(conn, system):
        now_blind = not mode.writes_unified
        if blind and not now_blind:
            periods.append((start, at))
        elif now_blind and not blind:
            start = at
        blind = now_blind
    if blind:
        periods.append((start, None))
    return periods


def unified_staleness(
    conn: sa.Connection,
    tables: dict[LegacySystemType, LegacyTable],
    *,
    since: datetime | None = None,
) -> Staleness | None:
    """Legacy-only writes since unified was last verified, or None if there are none
    (``since``: only rows written since then, the window a report judged).

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
    rows: dict[str, int] = {}
    starts: list[datetime | None] = []  # of the first stretch counted, per system
    for system, lt in tables.items():
        if lt.status is None:
            continue  # retired: legacy holds no status to be out of step with
        periods = [
            (start, end)
            for start, end in _legacy_only_periods(conn, system)
            if verified_at is None or end is None or end > verified_at
        ]
        if not periods:
            continue
        stamped = []
        for start, end in periods:
            lower = max(start, verified_at) if start and verified_at else start or verified_at
            bounds = []
            updated_at = lt.read("updated_at")  # a time kept as text, as the time it is
            if lower is not None:
                bounds.append(updated_at >= lower - STALE_SLACK)
            if end is not None:
                bounds.append(updated_at <= end + STALE_SLACK)
            if since is not None:
                bounds.append(updated_at >= since)
            stamped.append(sa.and_(sa.true(), *bounds))
        on = sa.and_(U.c.legacy_system == system.value, U.c.legacy_id == lt.id)
        n = conn.execute(
            sa.select(sa.func.count())
            .select_from(lt.table.outerjoin(U, on))
            .where(
                sa.or_(*stamped),
                sa.or_(U.c.id.is_(None), U.c.legacy_status.is_distinct_from(lt.read("status"))),
            )
        ).scalar_one()
        if n:
            rows[system.value] = int(n)
            starts.append(periods[0][0])
    if not rows:
        return None
    since = None if None in starts else min(s for s in starts if s is not None)
    if verified_at is not None and (since is None or since < verified_at):
        since = verified_at
    return Staleness(verified.id if verified else None, verified_at, since, rows)


def refuse_losing_legacy(
    conn: sa.Connection, new: DualWriteMode, moving: list[LegacySystemType]
) -> None:
    """ModeError unless the systems ``moving`` may enter ``new`` without a rollback's
    care for legacy: not out of UNIFIED_ONLY with changes legacy has not seen, not into a
    mode that writes legacy while its status columns are retired, not out of a mode that
    reads unified with acknowledged writes legacy lacks. Under the mode lock, in
    the switch's transaction: `mode set` and `phase advance` both refuse so (a rollback
    replays and restores first, and never comes through here)."""
    _refuse_stale_legacy(conn, new, moving)
    _refuse_retired_legacy(conn, new, moving)
    modes = read_modes(conn)  # out of a unified-primary mode: nothing acknowledged lost
    refuse_queued_legacy(conn, new, [s.value for s in moving if modes[s].reads_unified])


def _refuse_stale_legacy(
    conn: sa.Connection, new: DualWriteMode, moving: list[LegacySystemType]
) -> None:
    """Leaving UNIFIED_ONLY by hand would skip the replay: legacy would miss changes
    (per system: only the systems switched, and only their own pending changes). So would
    leaving a mode that reads unified for one that reads legacy while changes carried
    there by a rollback that stopped half-way (writes whose legacy side was refused under
    ``primary_wins``) await their replay."""
    modes = read_modes(conn)
    frozen = [s.value for s in moving if _skips_replay(modes[s], new)]
    if not frozen:
        return
    P = pending_legacy_changes
    pending = conn.execute(
        sa.select(sa.func.count())
        .select_from(P.join(U, U.c.id == P.c.transaction_id))
        .where(P.c.replayed_at.is_(None), U.c.legacy_system.in_(frozen))
    ).scalar_one()
    if pending:
        flag = f" --system {frozen[0].lower()}" if len(frozen) == 1 else ""
        made = (
            "made in UNIFIED_ONLY"
            if all(modes[LegacySystemType(s)] is DualWriteMode.UNIFIED_ONLY for s in frozen)
            else "made in UNIFIED_ONLY or carried by a rollback that did not finish"
        )
        raise ModeError(
            f"{pending} change(s) {made} ({', '.join(frozen)}) are not in "
            f"legacy yet; switching to {new.value} by hand would lose them. Use "
            f"`unistatus phase rollback{flag}` or `unistatus rollback --emergency{flag}`, "
            "which replay them first"
        )


def _skips_replay(current: DualWriteMode, new: DualWriteMode) -> bool:
    """Whether a switch from ``current`` to ``new`` by hand would leave pending changes
    unreplayed while legacy takes over (writes it, or is read as the truth)."""
    if current is DualWriteMode.UNIFIED_ONLY:
        return new.writes_legacy
    return current.reads_unified and not new.reads_unified


def _refuse_retired_legacy(
    conn: sa.Connection, new: DualWriteMode, moving: list[LegacySystemType]
) -> None:
    """A mode that writes legacy, while the legacy status columns are retired, would fail
    every write (even forced): the columns come back first."""
    if not new.writes_legacy or not moving or not columns_retired(conn):
        return
    raise ModeError(
        f"the legacy status columns are retired: in {new.value} every write to legacy "
        "would fail. Restore them first with `unistatus retire legacy-columns --undo "
        "--reason ...`, or use `unistatus phase rollback` or `unistatus rollback "
        "--emergency`, which restore them and replay what legacy has not seen"
    )


def get_mode(engine: sa.Engine, system: LegacySystemType | None = None) -> DualWriteMode:
    """:func:`read_mode` on a connection of its own."""
    try:
        with engine.connect() as conn:
            return read_mode(conn, system)
    except sa.exc.OperationalError as exc:
        raise _mode_unread(exc) from None


def _mode_unread(exc: sa.exc.OperationalError) -> StorageError:
    if refused_for_a_limit(exc):  # up, but full: not "unreachable"
        return connection_limit_error("cannot read the mode", exc)
    return StorageError(f"cannot read the mode: {exc.orig}")


def get_modes(engine: sa.Engine) -> dict[LegacySystemType, DualWriteMode]:
    """:func:`read_modes` on a connection of its own."""
    try:
        with engine.connect() as conn:
            return read_modes(conn)
    except sa.exc.OperationalError as exc:
        raise _mode_unread(exc) from None


def history(
    bind: sa.Engine | sa.Connection, key: str | None = None, limit: int = 100
) -> list[ControlChange]:
    """The newest control-log rows first; ``key`` means that key and its per-system
    keys (``mode``: ``mode``, ``mode.CASHOUT``, ...; ``phase`` likewise). On a
    connection: as its transaction sees them."""
    q = sa.select(control_log).order_by(control_log.c.id.desc()).limit(limit)
    if key:
        q = q.where(control_log.c.key.in_(system_keys(key)))
    with connected(bind) as conn:
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
