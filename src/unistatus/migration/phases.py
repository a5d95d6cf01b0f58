"""The migration's phases (0-4), with gates measured from live data.

Advancing writes the phase and its mode together under the exclusive mode lock and
records the measured gate values; a gate never passes by default. The phases, their
gates and how gates are measured: ``docs/phases.md``.

The phase is per legacy system, like the mode (:mod:`unistatus.db.control`): control key
``phase.<SYSTEM>`` (:func:`phase_key`; missing = 0). ``advance(system=S)`` moves one
system, its gates measured on its own data; without a system every system moves, and
only while they are all in the same phase. The old global key ``phase`` stays as a
summary (every system's phase while they agree, absent while they differ); revision
0017 copied a database's global phase to every system.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa

from unistatus.backfill import quarantine_count
from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings
from unistatus.db.control import refuse_losing_legacy, write_mode, write_value
from unistatus.db.dialect import ops_for
from unistatus.db.mode_reads import mode_keys, read_mode, read_modes, read_value
from unistatus.db.server_clock import database_now
from unistatus.db.system_keys import SYSTEMS, system_key, system_keys, systems_of, write_summary
from unistatus.db.tables import control_log, migration_control
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import GateError, InputError, StorageError
from unistatus.migration import gates
from unistatus.migration.gates import (
    BYPASS_GATE,
    GATE_WINDOW_SECONDS,
    MAX_ERROR_RATE,
    MAX_P95_MS,
    Gate,
)
from unistatus.migration.phase_backfill import resume_backfill
from unistatus.migration.phase_from import require_from
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
    "common_phase",
    "describe_phases",
    "evaluate_gates",
    "phase_key",
    "phase_keys",
    "phase_started_at",
    "phase_status",
    "phase_statuses",
    "read_phase",
    "read_phases",
    "require_one_phase",
    "resolve_since",
    "together_status",
    "write_phase",
]

log = logging.getLogger("unistatus.migration.phases")

PHASE_KEY = "phase"
# `check --since phase-start`: a check of every change since the current phase began.
PHASE_START = "phase-start"
# The control-log key of every rollback (written by unistatus.migration.rollback).
ROLLBACK_KEY = "last_rollback"


def phase_key(system: LegacySystemType) -> str:
    """The control key of ``system``'s phase (``phase.CASHOUT``)."""
    return system_key(PHASE_KEY, system)


def phase_keys(system: LegacySystemType | None = None) -> tuple[str, ...]:
    """The control keys that logged changes of ``system``'s phase (None: any system's):
    its own and the global key (which held every system's before revision 0017)."""
    return system_keys(PHASE_KEY, system)


def _control_keys(system: LegacySystemType | None) -> tuple[str, ...]:
    """A check that started before the last change of any of these never opens a gate
    of ``system`` (None: of any system). A rollback of any system counts for all."""
    return (*mode_keys(system), *phase_keys(system), ROLLBACK_KEY)


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
    system: LegacySystemType | None = None  # None: every system (all in this phase)

    @property
    def ready(self) -> bool:
        """Every gate into the next phase passes (False at the last phase)."""
        return self.next_phase is not None and all(g.passed for g in self.gates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system.value if self.system is not None else None,
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
    system: LegacySystemType | None = None  # None: every system

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system.value if self.system is not None else None,
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


def _parse_phase(value: str) -> int:
    try:
        phase = int(value)
    except ValueError:
        raise StorageError(f"stored phase {value!r} is not a number") from None
    if phase not in PHASES:
        raise StorageError(f"stored phase {phase} is not one of {sorted(PHASES)}")
    return phase


def read_phases(conn: sa.Connection) -> dict[LegacySystemType, int]:
    """Every system's phase, in one query (a missing key: 0)."""
    keys = {phase_key(system): system for system in SYSTEMS}
    rows = conn.execute(
        sa.select(migration_control.c.key, migration_control.c.value).where(
            migration_control.c.key.in_(list(keys))
        )
    ).all()
    phases = dict.fromkeys(SYSTEMS, 0)
    for key, value in rows:
        phases[keys[key]] = _parse_phase(value)
    return phases


def common_phase(phases: dict[LegacySystemType, int]) -> int | None:
    """The phase every system is in, or None while they differ."""
    distinct = set(phases.values())
    return distinct.pop() if len(distinct) == 1 else None


def describe_phases(phases: dict[LegacySystemType, int]) -> str:
    return ", ".join(f"{system.value} {phase}" for system, phase in phases.items())


def read_phase(conn: sa.Connection, system: LegacySystemType | None = None) -> int:
    """``system``'s phase; None: the phase of every system, and while they differ the
    furthest one (what the emergency path records as where it came from). Call
    :func:`read_phases` where systems may be in different phases."""
    if system is not None:
        value = read_value(conn, phase_key(system))
        return _parse_phase(value) if value is not None else 0
    return max(read_phases(conn).values())


def write_phase(
    conn: sa.Connection,
    phase: int,
    mode: DualWriteMode,
    *,
    system: LegacySystemType | None = None,
    actor: str,
    reason: str,
    metadata: dict[str, Any],
) -> None:
    """Set ``system``'s phase and mode (None: every system's) in the caller's transaction
    (which holds the mode lock); one control-log row per system, and the summary key
    (:func:`unistatus.db.system_keys.write_summary`)."""
    write_mode(conn, mode, system=system, actor=actor, reason=reason, metadata=metadata)
    for s in systems_of(system):
        write_value(conn, phase_key(s), str(phase), actor=actor, reason=reason, metadata=metadata)
    write_summary(conn, PHASE_KEY, read_phases, actor)


def _last_change_to(conn: sa.Connection, key: str | tuple[str, ...], value: str) -> datetime | None:
    keys = (key,) if isinstance(key, str) else key
    q = (
        sa.select(control_log.c.created_at)
        .where(control_log.c.key.in_(keys), control_log.c.new_value == value)
        .order_by(control_log.c.id.desc())
        .limit(1)
    )
    return as_utc(conn.execute(q).scalar_one_or_none())


def _last_control_id(conn: sa.Connection, system: LegacySystemType | None = None) -> int:
    """The newest mode, phase or rollback entry of ``system`` in the control log (0: none)."""
    q = sa.select(sa.func.max(control_log.c.id)).where(control_log.c.key.in_(_control_keys(system)))
    return int(conn.execute(q).scalar_one_or_none() or 0)


def _last_control_change(
    conn: sa.Connection, system: LegacySystemType | None = None
) -> datetime | None:
    """When ``system``'s mode or phase, or any rollback, last changed (None if never).
    A check that started before then measured another system state: a gate never
    reads it (legacy-only writes after an emergency rollback, say, are not in it)."""
    q = sa.select(sa.func.max(control_log.c.created_at)).where(
        control_log.c.key.in_(_control_keys(system))
    )
    return as_utc(conn.execute(q).scalar_one_or_none())


def phase_started_at(
    engine: sa.Engine, phase: int, system: LegacySystemType | None = None
) -> datetime | None:
    """When ``system`` last entered the phase (None if never); None: the first of every
    system's last entries (a check since then covers each system's gate; None if one never did)."""
    with engine.connect() as conn:
        entered = [_last_change_to(conn, phase_keys(s), str(phase)) for s in systems_of(system)]
    return None if None in entered else min(t for t in entered if t is not None)


def _require_common(phases: dict[LegacySystemType, int], what: str) -> int:
    common = common_phase(phases)
    if common is None:
        raise GateError(
            f"the systems are in different phases ({describe_phases(phases)}): {what} one "
            "system at a time with --system"
        )
    return common


def resolve_since(
    engine: sa.Engine,
    since: str | datetime | None,
    system: LegacySystemType | Collection[LegacySystemType] | None = None,
) -> str | datetime | None:
    """``phase-start`` (:data:`PHASE_START`) becomes when the current phase was entered
    (``system``'s, or those systems', which must be in one phase; None or none: every
    system's, alike): when the first of them entered it, so that the check covers each
    system's gate, not only the last's.

    The gate into phase 2 wants a check covering every change since phase 1 began;
    ``check --since phase-start`` is that check, with no timestamp to copy. Any other
    value is returned as it is, for :func:`unistatus.migration.check.parse_since`.
    """
    if not (isinstance(since, str) and since.strip().lower() == PHASE_START):
        return since
    chosen = [system] if isinstance(system, LegacySystemType) else sorted(system or ())
    with engine.connect() as conn:
        every = read_phases(conn)
    named = {s: every[s] for s in chosen} if chosen else every
    phase = _require_common(named, f"--since {PHASE_START}: check")
    entered = [phase_started_at(engine, phase, s) for s in named]
    started = None if None in entered else min(t for t in entered if t is not None)
    if started is None:
        raise InputError(
            f"--since {PHASE_START}: phase {phase} was never entered (a fresh installation); "
            "give an ISO time or an age like 1h"
        )
    return started


# --- gates --------------------------------------------------------------------------


def evaluate_gates(
    engine: sa.Engine,
    settings: Settings,
    into: int,
    *,
    mode: DualWriteMode | None = None,
    system: LegacySystemType | None = None,
) -> list[Gate]:
    """Measure the gates for entering phase ``into`` now: ``system``'s, on its own data
    (its backfill, its check figures, its latency and error rate, its bypass writes);
    None: every system's together."""
    if into not in PHASES or into == 0:
        raise InputError(f"no gates for phase {into}: phases are 1..{LAST_PHASE}")
    with engine.connect() as conn:
        mode = mode or read_mode(conn, system)
        phase1 = _last_change_to(conn, phase_keys(system), "1")
        in_phase1 = read_phase(conn, system) == 1
        # Every gate that reads a check wants one started after this (it is never
        # earlier than entering phase 1 or switching to unified primary).
        changed = _last_control_change(conn, system)
        switched = _last_change_to(
            conn, mode_keys(system), DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY.value
        )
        now = database_now(conn)  # the clock the switch's time was read from (server_clock)
    scoped = f" --system {system.value.lower()}" if system is not None else ""
    # Into phase 4 the bypass gate judges the capture's triggers (it reads them).
    current = gates.gate_capture_current(engine, settings) if into < LAST_PHASE else []
    # The tables the settings name, as every command takes them: a misnamed one (a typo)
    # is refused by check and backfill, and the later gates read their stored reports.
    tables = gates.gate_legacy_tables(engine, settings, system)
    if into == 1:
        return [gates.gate_mapping(), tables, *current]
    if into == 2:
        return [
            gates.gate_mapping(),
            tables,
            gates.gate_dual_write(mode),
            *current,
            gates.gate_check(
                engine,
                "new_transactions_consistent",
                after=changed,
                covering_since=phase1,
                require_full=False,
                need_rows=True,
                command="unistatus check --since "
                + (PHASE_START if in_phase1 or phase1 is None else phase1.isoformat())
                + scoped,
                system=system,
            ),
            gates.gate_error_rate(engine, system),
        ]
    if into == 3:
        return [
            tables,
            *gates.gate_backfill(engine, settings, system),
            gates.gate_check(
                engine,
                "full_check_consistent",
                after=changed,
                covering_since=None,
                require_full=True,
                need_rows=False,
                command="unistatus check" + scoped,
                system=system,
            ),
            gates.gate_zero(engine, "quarantine", quarantine_count, system),
            gates.gate_zero(engine, "repair_queue_open", open_repair_count, system),
            gates.gate_zero(engine, "replay_conflicts_open", open_conflict_count, system),
            *current,
        ]
    return [
        tables,
        gates.gate_soak(mode, settings, switched, now),
        gates.gate_p95(engine, settings, switched, system, now),
        gates.gate_error_rate(engine, system),
        gates.gate_check(
            engine,
            "full_check_consistent",
            after=changed,
            covering_since=None,
            require_full=True,
            need_rows=False,
            command="unistatus check" + scoped,
            system=system,
        ),
        gates.gate_zero(engine, "replay_conflicts_open", open_conflict_count, system),
        gates.gate_no_bypass(engine, settings, mode, switched, system, now),
    ]


def phase_status(
    engine: sa.Engine,
    settings: Settings,
    system: LegacySystemType | str | None = None,
    each: Mapping[LegacySystemType, PhaseStatus] | None = None,
) -> PhaseStatus:
    """``system``'s phase, mode, and the next phase's gates measured now on its data. None:
    every system together (GateError while they are in different phases: :func:`phase_statuses`
    shows each); ``each``: their own statuses, measured already (else measured here)."""
    chosen = LegacySystemType.parse(system) if system is not None else None
    try:
        with engine.connect() as conn:
            if chosen is None:
                phase = _require_common(read_phases(conn), "see them with `phase status`, move")
            else:
                phase = read_phase(conn, chosen)
            mode = read_mode(conn, chosen)
            since = _last_change_to(conn, phase_keys(chosen), str(phase))
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot read the phase: {exc.orig}") from None
    nxt = phase + 1 if phase < LAST_PHASE else None
    measured = evaluate_gates(engine, settings, nxt, mode=mode, system=chosen) if nxt else []
    if nxt is not None and nxt > 1 and chosen is None:  # advancing every system moves each
        known = {s: st.gates for s, st in (each or {}).items()}
        measure = partial(evaluate_gates, engine, settings, nxt)
        measured.append(gates.gate_each_system(measure, known=known))
    info = PHASES[phase]
    return PhaseStatus(phase, info.name, mode, info.mode, nxt, measured, since, chosen)


def require_one_phase(engine: sa.Engine, what: str) -> int:
    """The phase every system is in; GateError naming each system's while they differ.

    For the procedures of every system at once that start from "the" phase (a one-step
    rollback of every system would otherwise move a system behind the others forward).
    """
    with engine.connect() as conn:
        return _require_common(read_phases(conn), what)


def phase_statuses(engine: sa.Engine, settings: Settings) -> dict[LegacySystemType, PhaseStatus]:
    """:func:`phase_status` of every system, each on its own data."""
    return {system: phase_status(engine, settings, system) for system in SYSTEMS}


def together_status(
    engine: sa.Engine, settings: Settings, each: Mapping[LegacySystemType, PhaseStatus]
) -> PhaseStatus | None:
    """Every system together (:func:`phase_status`) while ``each`` (their statuses) are
    in one phase and one mode; None while they differ in either (one system switched by
    hand, ``mode set --system``): each one's own status is then what counts."""
    if common_phase({s: st.phase for s, st in each.items()}) is None:
        return None
    if len({st.mode for st in each.values()}) > 1:
        return None
    return phase_status(engine, settings, each=each)


def read_system_states(
    engine: sa.Engine,
) -> dict[LegacySystemType, tuple[DualWriteMode, int]]:
    """Every system's (mode, phase), in one connection (the observers' summary)."""
    try:
        with engine.connect() as conn:
            modes, phases = read_modes(conn), read_phases(conn)
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot read the phase: {exc.orig}") from None
    return {system: (modes[system], phases[system]) for system in SYSTEMS}


def advance(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str,
    reason: str | None = None,
    force: bool = False,
    system: LegacySystemType | str | None = None,
    from_phase: int | None = None,
) -> PhaseChange:
    """Enter the next phase if every gate passes (or ``force`` with a reason).

    ``system``: that system only, its gates measured on its data; None: every system,
    which must all be in the same phase (GateError naming them otherwise). Sets the next
    phase's mode in the same transaction, under the exclusive mode lock (the system's).
    ``from_phase``: only from that phase (:mod:`unistatus.migration.phase_from`).
    """
    chosen = LegacySystemType.parse(system) if system is not None else None
    if not actor or not actor.strip():
        raise InputError("an actor is required")
    actor = check_actor(actor)
    if reason is not None and reason.strip():
        reason = check_reason(reason)
    with engine.connect() as conn:
        seen = _last_control_id(conn, chosen)
    status = phase_status(engine, settings, chosen)
    require_from("advance", from_phase, status.phase, chosen)
    who = f"{chosen.value} is" if chosen is not None else "every system is"
    if status.next_phase is None:
        raise GateError(f"{who} already in phase {status.phase} ({status.name}), the last one")
    failing = [g for g in status.gates if not g.passed]
    if failing and not force:
        listed = "; ".join(f"{g.name}={g.value} (needs {g.threshold})" for g in failing)
        whose = f" ({chosen.value})" if chosen is not None else ""
        raise GateError(
            f"cannot enter phase {status.next_phase}{whose}: {len(failing)} gate(s) failing: "
            f"{listed}. "
            "Fix them, or pass --force with --reason to override (recorded)."
        )
    if failing and not (reason and reason.strip()):
        raise InputError("--force over failing gates needs --reason (it is recorded)")
    to = PHASES[status.next_phase]
    text = reason.strip() if reason and reason.strip() else f"all gates into phase {to.number} pass"
    forced = [g.name for g in failing]
    meta = {
        "action": "advance",
        "system": chosen.value if chosen is not None else None,
        "from_phase": status.phase,
        "to_phase": to.number,
        "gates": [g.as_dict() for g in status.gates],
        "forced": forced,
    }
    ops = ops_for(engine)
    with ops.write_transaction() as conn:
        ops.mode_exclusive_lock(conn, chosen, wait_seconds=settings.mode_lock_wait_seconds)
        phases = read_phases(conn)
        now_at = phases[chosen] if chosen is not None else common_phase(phases)
        require_from("advance", from_phase, now_at, chosen)
        if now_at != status.phase or _last_control_id(conn, chosen) != seen:
            # The gates describe a state that is gone (a mode set, another phase change,
            # a rollback): legacy-only writes since then are in no check they read.
            raise GateError(
                "the mode, the phase or a rollback changed while the gates were measured; "
                "run it again"
            )
        from_mode = read_mode(conn, chosen)
        modes = read_modes(conn)
        # A mode set by hand (UNIFIED_ONLY in phase 0, say) is left as `mode set` leaves it.
        refuse_losing_legacy(
            conn, to.mode, [s for s in systems_of(chosen) if modes[s] is not to.mode]
        )
        write_phase(
            conn, to.number, to.mode, system=chosen, actor=actor, reason=text, metadata=meta
        )
    if forced:
        log.warning(
            "phase %s entered (%s) by %s with forced gates %s: %s",
            to.number,
            chosen.value if chosen is not None else "every system",
            actor,
            forced,
            text,
        )
    notes = resume_backfill(engine, actor, chosen) if to.number == 2 else []
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
        system=chosen,
    )
