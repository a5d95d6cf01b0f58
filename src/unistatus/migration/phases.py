"""The migration's phases (0-4), with gates measured from live data.

Advancing writes the phase and its mode together under the exclusive mode lock and
records the measured gate values; a gate never passes by default. The phases, their
gates and how gates are measured: ``docs/phases.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.backfill import quarantine_count, resume
from unistatus.backfill.control import is_paused
from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings
from unistatus.db.control import mode_keys, read_mode, read_value, write_mode, write_value
from unistatus.db.dialect import ops_for
from unistatus.db.tables import control_log
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import GateError, InputError, StorageError
from unistatus.migration import gates
from unistatus.migration.gates import (
    BYPASS_GATE,
    GATE_WINDOW_SECONDS,
    MAX_ERROR_RATE,
    MAX_P95_MS,
    Gate,
)
from unistatus.migration.repair_queue import open_repair_count
from unistatus.migration.replay_conflicts import open_conflict_count

__all__ = [
    "BYPASS_GATE",
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
_CONTROL_KEYS = (*mode_keys(), PHASE_KEY, ROLLBACK_KEY)


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
    write_mode(conn, mode, actor=actor, reason=reason, metadata=metadata)
    write_value(conn, PHASE_KEY, str(phase), actor=actor, reason=reason, metadata=metadata)


def _last_change_to(conn: sa.Connection, key: str | tuple[str, ...], value: str) -> datetime | None:
    keys = (key,) if isinstance(key, str) else key
    q = (
        sa.select(control_log.c.created_at)
        .where(control_log.c.key.in_(keys), control_log.c.new_value == value)
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
        switched = _last_change_to(
            conn, mode_keys(), DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY.value
        )
    if into == 1:
        return [gates.gate_mapping()]
    if into == 2:
        return [
            gates.gate_mapping(),
            gates.gate_dual_write(mode),
            gates.gate_check(
                engine,
                "new_transactions_consistent",
                after=changed,
                covering_since=phase1,
                require_full=False,
                need_rows=True,
                command="unistatus check --since "
                + (PHASE_START if in_phase1 or phase1 is None else phase1.isoformat()),
            ),
            gates.gate_error_rate(engine),
        ]
    if into == 3:
        return [
            *gates.gate_backfill(engine, settings),
            gates.gate_check(
                engine,
                "full_check_consistent",
                after=changed,
                covering_since=None,
                require_full=True,
                need_rows=False,
            ),
            gates.gate_zero(engine, "quarantine", quarantine_count),
            gates.gate_zero(engine, "repair_queue_open", open_repair_count),
            gates.gate_zero(engine, "replay_conflicts_open", open_conflict_count),
        ]
    return [
        gates.gate_soak(mode, settings, switched),
        gates.gate_p95(engine, settings, switched),
        gates.gate_error_rate(engine),
        gates.gate_check(
            engine,
            "full_check_consistent",
            after=changed,
            covering_since=None,
            require_full=True,
            need_rows=False,
        ),
        gates.gate_zero(engine, "replay_conflicts_open", open_conflict_count),
        gates.gate_no_bypass(engine, settings, mode, switched),
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
