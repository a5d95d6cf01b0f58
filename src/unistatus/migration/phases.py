"""The migration's phases (0-4), with gates measured from live data.

Advancing writes the phase and its mode together under the exclusive mode lock and
records the measured gate values; a gate never passes by default. The phases, their
gates and how gates are measured: ``docs/phases.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.backfill import progress, quarantine_count, resume
from unistatus.backfill.control import is_paused
from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings
from unistatus.db.control import MODE_KEY, read_mode, read_value, write_value
from unistatus.db.dialect import ops_for
from unistatus.db.tables import control_log
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import GateError, InputError, StorageError
from unistatus.migration import capture
from unistatus.migration.check import latest_report
from unistatus.migration.repair_queue import open_repair_count
from unistatus.migration.replay_conflicts import open_conflict_count
from unistatus.observe.stats import window

__all__ = [
    "GATE_WINDOW_SECONDS",
    "Gate",
    "MAX_ERROR_RATE",
    "MAX_P95_MS",
    "PHASES",
    "PHASE_KEY",
    "PHASE_START",
    "PhaseChange",
    "PhaseInfo",
    "PhaseStatus",
    "ROLLBACK_KEY",
    "advance",
    "evaluate_gates",
    "phase_started_at",
    "phase_status",
    "read_phase",
    "resolve_since",
    "write_phase",
]

log = logging.getLogger("unistatus.migration.phases")

PHASE_KEY = "phase"
# `check --since phase-start`: a check of every change since the current phase began.
PHASE_START = "phase-start"
# The control-log key of every rollback (written by unistatus.migration.rollback).
ROLLBACK_KEY = "last_rollback"
# A check that started before the last change of any of these never opens a gate.
_CONTROL_KEYS = (MODE_KEY, PHASE_KEY, ROLLBACK_KEY)
MAX_ERROR_RATE = 0.001  # < 0.1 %
MAX_P95_MS = 200.0
# The error rate gates look at the adapters' operations over the last hour (the p95 gate
# into phase 4 at those since the switch to unified primary).
GATE_WINDOW_SECONDS = 3600.0
UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class PhaseInfo:
    number: int
    name: str
    mode: DualWriteMode


PHASES: dict[int, PhaseInfo] = {
    0: PhaseInfo(0, "not started", DualWriteMode.LEGACY_ONLY),
    1: PhaseInfo(1, "foundation", DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY),
    2: PhaseInfo(2, "backfill", DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY),
    3: PhaseInfo(3, "unified primary", DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY),
    4: PhaseInfo(4, "retirement", DualWriteMode.UNIFIED_ONLY),
}
LAST_PHASE = max(PHASES)


@dataclass(frozen=True)
class Gate:
    """One success criterion: its measured value, the threshold, and whether it passes."""

    name: str
    value: Any
    threshold: Any
    passed: bool
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class PhaseStatus:
    phase: int
    name: str
    mode: DualWriteMode
    expected_mode: DualWriteMode
    next_phase: int | None
    gates: list[Gate]
    since: datetime | None

    @property
    def ready(self) -> bool:
        """Every gate into the next phase passes (False at the last phase)."""
        return self.next_phase is not None and all(g.passed for g in self.gates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "name": self.name,
            "mode": self.mode.value,
            "expected_mode": self.expected_mode.value,
            "mode_matches_phase": self.mode is self.expected_mode,
            "since": self.since.isoformat() if self.since else None,
            "next_phase": self.next_phase,
            "next_phase_name": PHASES[self.next_phase].name if self.next_phase else None,
            "ready": self.ready,
            "gates": [g.as_dict() for g in self.gates],
        }


@dataclass
class PhaseChange:
    """What an advance or a rollback did."""

    from_phase: int
    to_phase: int
    from_mode: DualWriteMode
    to_mode: DualWriteMode
    actor: str
    reason: str
    at: datetime
    gates: list[Gate] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "from_phase": self.from_phase,
            "to_phase": self.to_phase,
            "from_mode": self.from_mode.value,
            "to_mode": self.to_mode.value,
            "actor": self.actor,
            "reason": self.reason,
            "at": self.at.isoformat(),
            "gates": [g.as_dict() for g in self.gates],
            "forced": list(self.forced),
            "notes": list(self.notes),
            "details": self.details,
        }


# --- the stored phase ---------------------------------------------------------------


def read_phase(conn: sa.Connection) -> int:
    value = read_value(conn, PHASE_KEY)
    if value is None:
        return 0
    try:
        phase = int(value)
    except ValueError:
        raise StorageError(f"stored phase {value!r} is not a number") from None
    if phase not in PHASES:
        raise StorageError(f"stored phase {phase} is not one of {sorted(PHASES)}")
    return phase


def write_phase(
    conn: sa.Connection,
    phase: int,
    mode: DualWriteMode,
    *,
    actor: str,
    reason: str,
    metadata: dict[str, Any],
) -> None:
    """Set phase and mode in the caller's transaction (which holds the mode lock)."""
    if read_mode(conn) is not mode:
        write_value(conn, MODE_KEY, mode.value, actor=actor, reason=reason, metadata=metadata)
    write_value(conn, PHASE_KEY, str(phase), actor=actor, reason=reason, metadata=metadata)


def _last_change_to(conn: sa.Connection, key: str, value: str) -> datetime | None:
    q = (
        sa.select(control_log.c.created_at)
        .where(control_log.c.key == key, control_log.c.new_value == value)
        .order_by(control_log.c.id.desc())
        .limit(1)
    )
    return as_utc(conn.execute(q).scalar_one_or_none())


def _last_control_id(conn: sa.Connection) -> int:
    """The newest mode, phase or rollback entry of the control log (0 if none)."""
    q = sa.select(sa.func.max(control_log.c.id)).where(control_log.c.key.in_(_CONTROL_KEYS))
    return int(conn.execute(q).scalar_one_or_none() or 0)


def _last_control_change(conn: sa.Connection) -> datetime | None:
    """When the mode, the phase or a rollback last changed (None if never).

    A check that started before then measured another system state: a gate never
    reads it (legacy-only writes after an emergency rollback, say, are not in it).
    """
    q = sa.select(sa.func.max(control_log.c.created_at)).where(control_log.c.key.in_(_CONTROL_KEYS))
    return as_utc(conn.execute(q).scalar_one_or_none())


def phase_started_at(engine: sa.Engine, phase: int) -> datetime | None:
    """When the phase was last entered (None if never)."""
    with engine.connect() as conn:
        return _last_change_to(conn, PHASE_KEY, str(phase))


def resolve_since(engine: sa.Engine, since: str | datetime | None) -> str | datetime | None:
    """``phase-start`` (:data:`PHASE_START`) becomes when the current phase was entered.

    The gate into phase 2 wants a check covering every change since phase 1 began;
    ``check --since phase-start`` is that check, with no timestamp to copy. Any other
    value is returned as it is, for :func:`unistatus.migration.check.parse_since`.
    """
    if not (isinstance(since, str) and since.strip().lower() == PHASE_START):
        return since
    with engine.connect() as conn:
        phase = read_phase(conn)
        started = _last_change_to(conn, PHASE_KEY, str(phase))
    if started is None:
        raise InputError(
            f"--since {PHASE_START}: phase {phase} was never entered (a fresh installation); "
            "give an ISO time or an age like 1h"
        )
    return started


# --- gates --------------------------------------------------------------------------


def _unavailable(name: str, threshold: Any, why: str) -> Gate:
    return Gate(name, UNAVAILABLE, threshold, False, why)


def _pct(x: float) -> str:
    return f"{x * 100:.3f}".rstrip("0").rstrip(".") + "%"


def _gate_mapping() -> Gate:
    report = LegacyStatusMapper().validate()
    detail = "; ".join(report.problems[:5]) or None
    return Gate("mapping_validation", _pct(report.coverage), "100%", report.ok, detail)


def _gate_dual_write(mode: DualWriteMode) -> Gate:
    return Gate("dual_write_on", mode.value, "DUAL_WRITE_*", mode.is_dual)


def _gate_error_rate(engine: sa.Engine) -> Gate:
    w = window(engine, GATE_WINDOW_SECONDS)
    if w.count == 0:
        return _unavailable(
            "error_rate",
            f"< {_pct(MAX_ERROR_RATE)}",
            "no adapter operations recorded in the last hour (adapters record them "
            "unless record_stats=False or UNISTATUS_RECORD_STATS=false)",
        )
    return Gate(
        "error_rate",
        _pct(w.error_rate),
        f"< {_pct(MAX_ERROR_RATE)}",
        w.error_rate < MAX_ERROR_RATE,
        f"{w.errors} errors in {w.count} operations over the last hour"
        + (f" ({w.rolled_back} rolled back by the caller, not counted)" if w.rolled_back else ""),
    )


def _gate_p95(engine: sa.Engine, settings: Settings, switched: datetime | None) -> Gate:
    """p95 of unified primary's own operations since the switch, over enough of them.

    The last hour would mix in legacy primary's operations from before the switch (a
    slow backfill, or a fast quiet hour) and judge unified primary by them.
    """
    name, threshold = "p95_latency_ms", f"< {MAX_P95_MS:g}"
    if switched is None:
        return _unavailable(name, threshold, "no record of the switch to unified primary")
    seconds = max((utcnow() - switched).total_seconds(), 0.001)
    w = window(engine, seconds, mode=DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY.value)
    since = f"since unified became primary ({switched.isoformat()})"
    p95 = w.p95_ms
    if p95 is None:
        return _unavailable(name, threshold, f"no adapter operations recorded {since}")
    need = settings.p95_gate_min_operations
    if w.count < need:
        detail = f"{w.count} operations {since}: at least {need} needed (p95_gate_min_operations)"
        return Gate(name, round(p95, 1), threshold, False, detail)
    return Gate(name, round(p95, 1), threshold, p95 < MAX_P95_MS, f"{w.count} operations {since}")


def _gate_check(
    engine: sa.Engine,
    name: str,
    *,
    after: datetime | None,
    covering_since: datetime | None,
    require_full: bool,
    need_rows: bool,
    command: str = "unistatus check",
) -> Gate:
    """A stored check report, started after ``after``, 100% consistent.

    ``command`` is the check that satisfies the gate: every failing detail names it.
    """
    run = f"run `{command}`"
    try:
        report = latest_report(engine, scope="all") if require_full else latest_report(engine)
    except sa.exc.SQLAlchemyError as exc:
        return _unavailable(name, "100%", f"cannot read check reports: {exc}")
    if report is None:
        return _unavailable(name, "100%", f"no check report yet: {run}")
    if after is not None and report.started_at < after:
        return _unavailable(
            name,
            "100%",
            f"check #{report.id} started before the last mode, phase or rollback change "
            f"({after.isoformat()}): {run} again",
        )
    systems = {str(s) for s in report.systems}
    if systems and systems != {s.value for s in LegacySystemType}:
        return _unavailable(
            name, "100%", f"the latest check covers only {', '.join(sorted(systems))}: {run}"
        )
    since = report.since
    if covering_since is not None and since is not None and since > covering_since:
        return _unavailable(
            name,
            "100%",
            f"the latest check covers only changes since {since.isoformat()}: {run}",
        )
    if need_rows and report.total == 0:
        return Gate(name, "0 of 0", "100%", False, "no transactions to verify yet")
    rate = float(report.consistency_rate)
    detail = f"check #{report.id}: {report.consistent} of {report.total} consistent"
    return Gate(name, _pct(rate), "100%", bool(report.is_consistent), detail)


def _gate_backfill(engine: sa.Engine, settings: Settings) -> list[Gate]:
    try:
        result = progress(engine, settings)
    except Exception as exc:  # a broken source makes the gate fail, never pass
        return [_unavailable("backfill_complete", "100%", f"cannot read progress: {exc}")]
    gates: list[Gate] = []
    for system, info in sorted(result.items()):
        percent = float(info.get("percent") or 0.0)
        complete = bool(info.get("complete")) and percent >= 100.0
        detail = f"{info.get('done', 0)} of {info.get('total', 0)} rows, {info.get('state')}"
        gates.append(
            Gate(f"backfill_{str(system).lower()}", f"{percent:g}%", "100%", complete, detail)
        )
    return gates or [_unavailable("backfill_complete", "100%", "no backfill progress reported")]


def _gate_zero(engine: sa.Engine, name: str, count: Callable[[sa.Engine], int]) -> Gate:
    try:
        n = int(count(engine))
    except Exception as exc:
        return _unavailable(name, 0, f"cannot count: {exc}")
    return Gate(name, n, 0, n == 0)


def _gate_soak(mode: DualWriteMode, settings: Settings, since: datetime | None) -> Gate:
    threshold = f">= {settings.soak_seconds:g} s"
    if mode is not DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY:
        return Gate("unified_primary_soak_s", 0, threshold, False, f"mode is {mode.value}")
    if since is None:
        return _unavailable("unified_primary_soak_s", threshold, "no record of the switch")
    elapsed = (utcnow() - since).total_seconds()
    return Gate(
        "unified_primary_soak_s",
        round(elapsed, 1),
        threshold,
        elapsed >= settings.soak_seconds,
        f"unified primary since {since.isoformat()}",
    )


BYPASS_GATE = "no_bypass_writes_in_soak"


def _gate_no_bypass(engine: sa.Engine, settings: Settings, mode: DualWriteMode) -> Gate:
    """No writer bypassed unistatus since unified became primary (every code path is
    converted before legacy is frozen). Only the capture can see such writes: without
    it the gate passes, saying it proves nothing (docs/capture.md, "The gate")."""
    primary = DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY
    if mode is not primary:
        return _unavailable(BYPASS_GATE, 0, f"mode is {mode.value}: the soak starts at {primary}")
    with engine.connect() as conn:
        since = _last_change_to(conn, MODE_KEY, primary.value)
        enabled = capture.enabled_since(conn)
    if since is None:
        return _unavailable(BYPASS_GATE, 0, "no record of the switch")
    if enabled is None:
        return Gate(
            BYPASS_GATE,
            "capture not enabled",
            0,
            True,
            "capture not enabled: writes that bypass unistatus are not seen, so this gate "
            "proves nothing; `unistatus capture enable` before the soak to have it checked",
        )
    state = capture.status(engine, settings)
    if not state.ok:
        missing = ", ".join(sorted({t["name"] for t in state.as_dict()["missing"]}))
        what = f"triggers are missing ({missing})" if missing else "its triggers are stale"
        if state.mapping_changed:
            what += " (the mapping changed since they were generated)"
        return _unavailable(
            BYPASS_GATE, 0, f"capture is enabled but {what}: run `unistatus capture enable`"
        )
    covered = (utcnow() - max(since, enabled)).total_seconds()
    if enabled > since and covered < settings.soak_seconds:
        return _unavailable(
            BYPASS_GATE,
            0,
            f"capture enabled at {enabled.isoformat()}, after the soak began "
            f"({since.isoformat()}): it has seen {covered:.0f} s of the "
            f"{settings.soak_seconds:g} s soak",
        )
    seen = capture.writers_seen(engine, since=since)
    if not seen:
        return Gate(BYPASS_GATE, 0, 0, True, f"none since {max(since, enabled).isoformat()}")
    names = "; ".join(
        f"{w.writer} on {w.system} (last {w.last_seen_at.isoformat() if w.last_seen_at else '?'})"
        for w in seen[:5]
    )
    more = f" and {len(seen) - 5} more" if len(seen) > 5 else ""
    return Gate(
        BYPASS_GATE,
        len(seen),
        0,
        False,
        f"writers bypassing unistatus since unified became primary ({since.isoformat()}): "
        f"{names}{more}; convert them, then wait out a new soak (`unistatus capture status`)",
    )


def evaluate_gates(
    engine: sa.Engine, settings: Settings, into: int, *, mode: DualWriteMode | None = None
) -> list[Gate]:
    """Measure the gates for entering phase ``into`` now."""
    if into not in PHASES or into == 0:
        raise InputError(f"no gates for phase {into}: phases are 1..{LAST_PHASE}")
    with engine.connect() as conn:
        mode = mode or read_mode(conn)
        phase1 = _last_change_to(conn, PHASE_KEY, "1")
        in_phase1 = read_phase(conn) == 1
        # Every gate that reads a check wants one started after this (it is never
        # earlier than entering phase 1 or switching to unified primary).
        changed = _last_control_change(conn)
        switched = _last_change_to(conn, MODE_KEY, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY.value)
    if into == 1:
        return [_gate_mapping()]
    if into == 2:
        return [
            _gate_mapping(),
            _gate_dual_write(mode),
            _gate_check(
                engine,
                "new_transactions_consistent",
                after=changed,
                covering_since=phase1,
                require_full=False,
                need_rows=True,
                command="unistatus check --since "
                + (PHASE_START if in_phase1 or phase1 is None else phase1.isoformat()),
            ),
            _gate_error_rate(engine),
        ]
    if into == 3:
        return [
            *_gate_backfill(engine, settings),
            _gate_check(
                engine,
                "full_check_consistent",
                after=changed,
                covering_since=None,
                require_full=True,
                need_rows=False,
            ),
            _gate_zero(engine, "quarantine", quarantine_count),
            _gate_zero(engine, "repair_queue_open", open_repair_count),
            _gate_zero(engine, "replay_conflicts_open", open_conflict_count),
        ]
    return [
        _gate_soak(mode, settings, switched),
        _gate_p95(engine, settings, switched),
        _gate_error_rate(engine),
        _gate_check(
            engine,
            "full_check_consistent",
            after=changed,
            covering_since=None,
            require_full=True,
            need_rows=False,
        ),
        _gate_zero(engine, "replay_conflicts_open", open_conflict_count),
        _gate_no_bypass(engine, settings, mode),
    ]


def phase_status(engine: sa.Engine, settings: Settings) -> PhaseStatus:
    """The phase, the mode, and the next phase's gates measured now."""
    try:
        with engine.connect() as conn:
            phase = read_phase(conn)
            mode = read_mode(conn)
            since = _last_change_to(conn, PHASE_KEY, str(phase))
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot read the phase: {exc.orig}") from None
    nxt = phase + 1 if phase < LAST_PHASE else None
    gates = evaluate_gates(engine, settings, nxt, mode=mode) if nxt else []
    info = PHASES[phase]
    return PhaseStatus(phase, info.name, mode, info.mode, nxt, gates, since)


def _gate_meta(gates: list[Gate]) -> list[dict[str, Any]]:
    return [g.as_dict() for g in gates]


def advance(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str,
    reason: str | None = None,
    force: bool = False,
) -> PhaseChange:
    """Enter the next phase if every gate passes (or ``force`` with a reason).

    Sets the next phase's mode in the same transaction, under the exclusive mode lock.
    """
    if not actor or not actor.strip():
        raise InputError("an actor is required")
    actor = check_actor(actor)
    if reason is not None and reason.strip():
        reason = check_reason(reason)
    with engine.connect() as conn:
        seen = _last_control_id(conn)
    status = phase_status(engine, settings)
    if status.next_phase is None:
        raise GateError(f"already in phase {status.phase} ({status.name}), the last one")
    failing = [g for g in status.gates if not g.passed]
    if failing and not force:
        listed = "; ".join(f"{g.name}={g.value} (needs {g.threshold})" for g in failing)
        raise GateError(
            f"cannot enter phase {status.next_phase}: {len(failing)} gate(s) failing: {listed}. "
            "Fix them, or pass --force with --reason to override (recorded)."
        )
    if failing and not (reason and reason.strip()):
        raise InputError("--force over failing gates needs --reason (it is recorded)")
    to = PHASES[status.next_phase]
    text = reason.strip() if reason and reason.strip() else f"all gates into phase {to.number} pass"
    forced = [g.name for g in failing]
    meta = {
        "action": "advance",
        "from_phase": status.phase,
        "to_phase": to.number,
        "gates": _gate_meta(status.gates),
        "forced": forced,
    }
    ops = ops_for(engine)
    with ops.write_transaction() as conn:
        ops.mode_exclusive_lock(conn)
        if read_phase(conn) != status.phase or _last_control_id(conn) != seen:
            # The gates describe a state that is gone (a mode set, another phase change,
            # a rollback): legacy-only writes since then are in no check they read.
            raise GateError(
                "the mode, the phase or a rollback changed while the gates were measured; "
                "run it again"
            )
        from_mode = read_mode(conn)
        write_phase(conn, to.number, to.mode, actor=actor, reason=text, metadata=meta)
    if forced:
        log.warning(
            "phase %s entered by %s with forced gates %s: %s", to.number, actor, forced, text
        )
    notes = _resume_backfill(engine, actor) if to.number == 2 else []
    return PhaseChange(
        status.phase,
        to.number,
        from_mode,
        to.mode,
        actor,
        text,
        utcnow(),
        gates=status.gates,
        forced=forced,
        notes=notes,
    )


def _resume_backfill(engine: sa.Engine, actor: str) -> list[str]:
    """Entering phase 2 lets backfill workers paused by an earlier rollback go on."""
    with engine.connect() as conn:
        if not is_paused(conn):
            return []
    resume(engine, actor=actor, reason="entering phase 2 (backfill)")
    return ["backfill workers resumed (they were paused by a rollback)"]
