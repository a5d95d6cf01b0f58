"""``unistatus plan``: what the rest of the migration would do, measured now, changing nothing.

For every phase still ahead: its gates as they stand now, the commands that would run,
what a rollback out of it would do (how many changes its replay would write to legacy,
and how long that takes at the rate earlier rollbacks replayed, when one did), and time
estimates computed from this database: row counts per system, and backfill, check and
archive export rates measured on a small sample. The backfill's own statement runs on the
sample inside a transaction that is always rolled back; the check's statement only
reads (:mod:`unistatus.migration.rollout_figures`). The shape (:data:`PLAN_FORMAT`) and how it is
computed: ``docs/phases.md``, "The plan".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa

from unistatus.backfill import quarantine_count
from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.mode_reads import describe_modes, read_mode, read_modes
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import InputError, ModeError
from unistatus.migration import rollout_figures
from unistatus.migration.gates import Gate, gate_each_system
from unistatus.migration.phases import (
    LAST_PHASE,
    PHASE_START,
    PHASES,
    describe_phases,
    evaluate_gates,
    read_phase,
    read_phases,
)
from unistatus.migration.retire import legacy_columns_dropped
from unistatus.migration.rollback import ROLLBACK_TARGET
from unistatus.migration.rollout_figures import (
    SystemFigures,
    replay_estimate,
    replay_rate,
    replay_size,
    rounded,
)

__all__ = [
    "DEFAULT_SAMPLE_ROWS",
    "PLAN_FORMAT",
    "PhasePlan",
    "RollbackPreview",
    "RolloutPlan",
    "Step",
    "SystemFigures",
    "rollout_plan",
    "system_state",
]

# The version of the JSON shape (``RolloutPlan.as_dict``): bumped on any incompatible change.
PLAN_FORMAT = 1
DEFAULT_SAMPLE_ROWS = 2000

REASON = '--reason "TEXT"'
SOAK_GATE = "unified_primary_soak_s"  # migration.gates.gate_soak
# Commands that take `--system`.
SYSTEM_SCOPED = frozenset(
    {"backfill", "check", "repair", "phase advance", "phase rollback", "rollback --emergency"}
)


def system_state(conn: sa.Connection, system: LegacySystemType | None) -> tuple[DualWriteMode, int]:
    """The mode and phase a plan starts from: THE one place they are read.

    ``system``'s (None: the mode and phase every system is in; a ModeError naming
    ``--system`` while they differ, so such a plan is asked for one system at a time).
    """
    if system is None:
        modes, phases = read_modes(conn), read_phases(conn)
        if len(set(modes.values())) > 1:
            differ = f"modes ({describe_modes(modes)})"
        elif len(set(phases.values())) > 1:
            differ = f"phases ({describe_phases(phases)})"
        else:
            differ = None
        if differ is not None:
            raise ModeError(
                f"the systems are in different {differ}: plan one system at a time with --system"
            )
    return read_mode(conn, system), read_phase(conn, system)


@dataclass(frozen=True)
class Step:
    """One command the phase would run, why, and how long it is expected to take."""

    command: str
    why: str
    estimate_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "why": self.why,
            "estimate_seconds": rounded(self.estimate_seconds),
        }


@dataclass(frozen=True)
class RollbackPreview:
    """What rolling back would do, with the replay's size as it stands now."""

    command: str
    to_phase: int
    to_mode: DualWriteMode
    actions: list[str]
    replay: dict[str, int]
    # The replay's changes and time at the measured rate (rollout_figures.replay_estimate).
    estimate: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "to_phase": self.to_phase,
            "to_mode": self.to_mode.value,
            "actions": list(self.actions),
            "replay": dict(self.replay),
            "replay_estimate": dict(self.estimate),
        }


@dataclass(frozen=True)
class PhasePlan:
    """One phase ahead: its gates now, its commands, its rollback, its estimates."""

    phase: int
    name: str
    mode: DualWriteMode
    next: bool  # the next phase: its gates decide the next `phase advance`
    gates: list[Gate]
    steps: list[Step]
    rollback: RollbackPreview
    wait_seconds: float = 0.0  # time that must pass (the soak), not work

    @property
    def ready(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def estimate_seconds(self) -> float | None:
        known = [s.estimate_seconds for s in self.steps if s.estimate_seconds is not None]
        return sum(known) if known else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "name": self.name,
            "mode": self.mode.value,
            "next": self.next,
            "ready": self.ready,
            "gates": [g.as_dict() for g in self.gates],
            "steps": [s.as_dict() for s in self.steps],
            "estimate_seconds": rounded(self.estimate_seconds),
            "wait_seconds": rounded(self.wait_seconds),
            "rollback": self.rollback.as_dict(),
        }


@dataclass
class RolloutPlan:
    """The whole plan (see :func:`rollout_plan`)."""

    system: LegacySystemType | None
    phase: int
    mode: DualWriteMode
    figures: dict[LegacySystemType, SystemFigures]
    phases: list[PhasePlan]
    emergency: RollbackPreview
    notes: list[str] = field(default_factory=list)
    measured_at: datetime = field(default_factory=utcnow)
    duration_ms: float = 0.0

    @property
    def estimate_seconds(self) -> float:
        return sum(p.estimate_seconds or 0.0 for p in self.phases)

    @property
    def wait_seconds(self) -> float:
        return sum(p.wait_seconds for p in self.phases)

    def summary(self) -> dict[str, Any]:
        gates = [g for p in self.phases for g in p.gates]
        nxt = next((p for p in self.phases if p.next), None)
        return {
            "phases": len(self.phases),
            "commands": sum(len(p.steps) for p in self.phases),
            "gates": len(gates),
            "gates_failing": sum(not g.passed for g in gates),
            "next_phase_ready": nxt.ready if nxt else None,
            "estimate_seconds": rounded(self.estimate_seconds),
            "wait_seconds": rounded(self.wait_seconds),
            "replay_changes": self.emergency.replay["changes"],
            "changed": 0,  # a plan changes nothing
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "system": self.system.value if self.system else None,
            "phase": self.phase,
            "name": PHASES[self.phase].name,
            "mode": self.mode.value,
            "measured_at": self.measured_at.isoformat(),
            "duration_ms": round(self.duration_ms, 1),
            "systems": {s.value: f.as_dict() for s, f in self.figures.items()},
            "phases": [p.as_dict() for p in self.phases],
            "emergency_rollback": self.emergency.as_dict(),
            "notes": list(self.notes),
            "summary": self.summary(),
        }


# --- the phases ahead -----------------------------------------------------------------


def _flag(command: str, system: LegacySystemType | None) -> str:
    """``--system`` for a command that takes it, when the plan is for one system."""
    if system is None or command not in SYSTEM_SCOPED:
        return ""
    return f" --system {system.value.lower()}"


def _sum(values: list[float | None]) -> float | None:
    if any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def _advance(phase: int, system: LegacySystemType | None) -> Step:
    info = PHASES[phase]
    return Step(
        f"unistatus phase advance{_flag('phase advance', system)} {REASON}",
        f"enter phase {phase} ({info.name}): switches the mode to {info.mode.value}, "
        "only if every gate passes",
        0.0,
    )


def _steps(
    into: int,
    figures: dict[LegacySystemType, SystemFigures],
    system: LegacySystemType | None,
    quarantined: int,
) -> list[Step]:
    check = _sum([f.check_seconds() for f in figures.values()])
    if into == 1:
        return [
            Step("unistatus mapping --validate", "the mapping covers every legacy status", 0.0),
            _advance(1, system),
        ]
    if into == 2:
        return [
            Step(
                f"unistatus check{_flag('check', system)} --since {PHASE_START}",
                "verify every transaction written since phase 1 began (reads every pair)",
                check,
            ),
            _advance(2, system),
        ]
    if into == 3:
        missing = sum(f.missing_unified or 0 for f in figures.values())
        steps = [
            Step(
                "unistatus backfill" + _flag("backfill", system),
                f"copy {missing} legacy row(s) without a unified row",
                _sum([f.backfill_seconds() for f in figures.values()]),
            ),
        ]
        if quarantined:
            steps.append(
                Step(
                    "unistatus backfill quarantine",
                    f"{quarantined} unmappable row(s) set aside: fix them, then retry",
                )
            )
        steps += [
            Step(
                f"unistatus check{_flag('check', system)}",
                "a full check: every pair consistent",
                check,
            ),
            Step(
                f"unistatus repair{_flag('repair', system)} --strategy legacy_wins {REASON}",
                "only if the check finds mismatches",
            ),
            _advance(3, system),
        ]
        return steps
    if into == 4:
        return [
            Step("unistatus capture status", "no writer bypasses unistatus during the soak", 0.0),
            Step(
                f"unistatus check{_flag('check', system)}",
                "a full check after the switch to unified primary",
                check,
            ),
            _advance(4, system),
            Step(
                "unistatus archive export --out DIR",
                "keep the legacy tables before anything is dropped: " + _archive_size(figures),
                _sum([f.archive_seconds() for f in figures.values()]),
            ),
            Step("unistatus archive verify DIR", "verify and record the archive", 0.0),
            Step(
                f"unistatus retire legacy-columns {REASON}",
                "drop the legacy status columns (reversible: --undo); of every system at "
                "once, when all of them are in phase 4"
                if system is not None
                else "drop the legacy status columns (reversible: --undo)",
                0.0,
            ),
        ]
    raise InputError(f"no phase {into}")


def _archive_size(figures: dict[LegacySystemType, SystemFigures]) -> str:
    """The archive's rows, and its size and time when measured ("not measured" else)."""
    rows = sum(f.legacy_rows for f in figures.values())
    sizes = [f.archive_bytes() for f in figures.values()]
    if any(b is None for b in sizes) or any(f.archive_seconds() is None for f in figures.values()):
        return f"{rows} legacy row(s); size and time not measured"
    total = sum(b for b in sizes if b is not None)
    return f"{rows} legacy row(s), about {total / 1e6:.1f} MB gzipped (timed on a sample)"


def _rollback_actions(
    phase: int,
    retired: bool,
    replay: dict[str, int],
    system: LegacySystemType | None,
    *,
    pause: bool = True,
) -> list[str]:
    actions = []
    if replay["changes"]:
        actions.append(
            f"replay {replay['changes']} pending change(s) of {replay['transactions']} "
            f"transaction(s) to legacy first ({replay['creates']} create(s), "
            f"{replay['status_changes']} status change(s); at most "
            f"{replay['legacy_rows_written_at_most']} legacy row(s) written)"
        )
    if phase == 4:
        if not replay["changes"]:
            actions.append("replay to legacy every change made in UNIFIED_ONLY (none yet)")
        if retired:
            actions.append(
                "restore the legacy status columns first (retire --undo; compatibility "
                "views, if any, are dropped)"
            )
    if phase == 2 and pause:
        actions.append(_pause(system))
    return actions


def _pause(system: LegacySystemType | None) -> str:
    return f"pause the backfill workers{_of(system)} (their rows stay; `backfill undo` removes)"


def _of(system: LegacySystemType | None) -> str:
    return f" of {system.value}" if system is not None else ""


def _rollback(
    phase: int,
    retired: bool,
    replay: dict[str, int],
    system: LegacySystemType | None,
    estimate: dict[str, Any],
) -> RollbackPreview:
    to = ROLLBACK_TARGET[phase]
    actions = _rollback_actions(phase, retired, replay, system)
    actions.append(
        f"set phase {to} and mode {PHASES[to].mode.value}{_of(system)} in the same transaction"
    )
    return RollbackPreview(
        f"unistatus phase rollback{_flag('phase rollback', system)} {REASON}",
        to,
        PHASES[to].mode,
        actions,
        replay,
        estimate,
    )


def _emergency(
    phase: int,
    retired: bool,
    replay: dict[str, int],
    system: LegacySystemType | None,
    estimate: dict[str, Any],
) -> RollbackPreview:
    # The emergency pauses the backfill from every phase, after the switch.
    actions = _rollback_actions(4 if retired else phase, retired, replay, system, pause=False)
    actions.append(f"set phase 0 and mode LEGACY_ONLY{_of(system)} in the same transaction")
    actions.append(_pause(system))
    return RollbackPreview(
        f"unistatus rollback --emergency{_flag('rollback --emergency', system)} {REASON}",
        0,
        DualWriteMode.LEGACY_ONLY,
        actions,
        replay,
        estimate,
    )


def _soak_left(settings: Settings, gates: list[Gate]) -> float:
    """The part of the soak still to wait, from the soak gate's own measurement (all of
    it while unified is not primary yet)."""
    elapsed = next((g.value for g in gates if g.name == SOAK_GATE), None)
    if isinstance(elapsed, int | float) and not isinstance(elapsed, bool):
        return max(0.0, settings.soak_seconds - float(elapsed))
    return settings.soak_seconds


def rollout_plan(
    engine: sa.Engine,
    settings: Settings,
    *,
    system: LegacySystemType | str | None = None,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
) -> RolloutPlan:
    """The plan for every phase still ahead, measured now; it changes nothing.

    ``system`` limits the row counts, rates, estimates and replay sizes to one legacy
    system. ``sample_rows`` is how many legacy rows per system the backfill and check
    rates are measured on (0: not measured, the estimates are then unknown, and nothing
    runs but reads).
    """
    if isinstance(sample_rows, bool) or not isinstance(sample_rows, int) or sample_rows < 0:
        raise InputError(f"sample_rows must be a non-negative integer, got {sample_rows!r}")
    chosen = LegacySystemType.parse(system) if system is not None else None
    started = time.perf_counter()
    with engine.connect() as conn:
        mode, phase = system_state(conn, chosen)
        replay = replay_size(conn, chosen)
        estimate = replay_estimate(replay, replay_rate(conn))
    retired = legacy_columns_dropped(engine, settings)
    tables = resolve_legacy_tables(
        engine, settings, systems=[chosen] if chosen else None, require_status=False
    )
    ahead = list(range(phase + 1, LAST_PHASE + 1))
    figures = rollout_figures.figures(
        engine,
        tables,
        sample_rows=sample_rows,
        backfill_ahead=3 in ahead,
        check_ahead=bool(set(ahead) & {2, 3, 4}),
        archive_ahead=4 in ahead,
    )
    quarantined = quarantine_count(engine, system=chosen) if 3 in ahead else 0
    phases = []
    for into in ahead:
        gates = evaluate_gates(engine, settings, into, mode=mode, system=chosen)
        if chosen is None and into > 1:  # as `phase advance` of every system judges it
            gates.append(gate_each_system(partial(evaluate_gates, engine, settings, into)))
        phases.append(
            PhasePlan(
                into,
                PHASES[into].name,
                PHASES[into].mode,
                into == phase + 1,
                gates,
                _steps(into, figures, chosen, quarantined),
                _rollback(into, retired, replay, chosen, estimate),
                _soak_left(settings, gates) if into == 4 else 0.0,
            )
        )
    notes = []
    if chosen is not None:
        notes.append(
            f"mode, phase, gates, figures, estimates and rollbacks are {chosen.value}'s; the "
            "other systems are left as they are"
        )
    if len(phases) > 1:
        notes.append(
            "gates of the phases after the next are measured now too: they are measured "
            "again when their turn comes"
        )
    if chosen is not None and 4 in ahead:
        notes.append(
            f"`archive export` writes every configured legacy table: its rows and time here "
            f"are {chosen.value}'s"
        )
    if not estimate["measured"] and estimate["changes"]:
        notes.append(
            "replay time not measured: no rollback has replayed changes on this database yet"
        )
    if sample_rows == 0:
        notes.append("rates not measured (sample of 0 rows): estimates unknown")
    refused = next((f.backfill_unmeasured for f in figures.values() if f.backfill_unmeasured), None)
    if refused:
        notes.append(
            f"backfill rate not measured: {refused}; its sample is a write, rolled back: "
            "the backfill's estimates are unknown (run `unistatus plan` on the primary)"
        )
    return RolloutPlan(
        chosen,
        phase,
        mode,
        figures,
        phases,
        _emergency(phase, retired, replay, chosen, estimate),
        notes,
        duration_ms=(time.perf_counter() - started) * 1000,
    )
