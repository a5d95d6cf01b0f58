"""Rollback procedures: one step back per phase, and the emergency path to legacy.

Every rollback replays the changes recorded while legacy was frozen, the last batch in
the same transaction as the mode switch, so no write is lost. What each phase's step
back does and how the emergency path works: ``docs/rollback.md``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa

from unistatus.backfill import pause
from unistatus.backfill.control import is_paused
from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.control import write_value
from unistatus.db.failures import one_line
from unistatus.db.mode_reads import common_mode, read_modes
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import GateError, InputError
from unistatus.migration.phase_from import require_from
from unistatus.migration.phases import (
    PHASES,
    ROLLBACK_KEY,
    PhaseChange,
    common_phase,
    describe_phases,
    read_phase,
    read_phases,
    write_phase,
)
from unistatus.migration.replay import replay_pending

__all__ = [
    "ROLLBACK_TARGET",
    "emergency_rollback",
    "mixed_origin",
    "rollback_current_phase",
]

log = logging.getLogger("unistatus.migration.rollback")

_MODE_ORDER = list(DualWriteMode)  # LEGACY_ONLY first: the order of the phases
# phase -> the phase a one-step rollback lands in
ROLLBACK_TARGET = {1: 0, 2: 1, 3: 2, 4: 2}
BACKFILL_UNDO_NOTE = (
    "backfill workers paused; `unistatus backfill undo` removes the backfilled rows "
    "if the backfill must restart from scratch"
)

CONFLICTS_NOTE = (
    "{n} transaction(s) NOT replayed: legacy no longer held what the change started from "
    "(or stayed locked); nothing was overwritten. List them with `unistatus rollback "
    "conflicts`, decide each with `unistatus rollback resolve ID --keep-legacy|--apply "
    "--reason ...`"
)


def _pause_backfill(
    engine: sa.Engine, actor: str, reason: str, system: LegacySystemType | None
) -> str:
    pause(engine, actor=actor, reason=reason, system=system)
    if system is None:
        return "backfill workers paused (they wait before their next batch)"
    try:
        with engine.connect() as conn:
            others = [s for s in LegacySystemType if s is not system and not is_paused(conn, s)]
    except sa.exc.DBAPIError:  # what the note says is no reason to stop a rollback
        return f"backfill of {system.value} paused"
    going_on = (
        f"{', '.join(s.value for s in others)}'s goes on"
        if others
        else "the other systems' was paused already"
    )
    return f"backfill of {system.value} paused ({going_on})"


def _different_phases(phases: dict[LegacySystemType, int]) -> GateError:
    return GateError(
        f"the systems are in different phases ({describe_phases(phases)}): roll back one "
        "system at a time with --system"
    )


def mixed_origin(from_each: dict[str, dict[str, Any]]) -> str | None:
    """Each system's phase and mode a rollback left, in words, while they differed
    (``phases CASHOUT 4 UNIFIED_ONLY, ESCROW 2 ...``); None while they were one."""
    if len({(e["phase"], e["mode"]) for e in from_each.values()}) <= 1:
        return None
    return "phases " + ", ".join(f"{s} {e['phase']} {e['mode']}" for s, e in from_each.items())


def _switch(
    engine: sa.Engine,
    settings: Settings,
    *,
    system: LegacySystemType | None,
    from_phase: int | None,
    to_phase: int,
    to_mode: DualWriteMode,
    actor: str,
    reason: str,
    extra: dict[str, Any],
) -> tuple[int, DualWriteMode, dict[str, Any], dict[str, dict[str, Any]]]:
    """Replay what legacy has not seen, then set phase and mode in the same transaction:
    of ``system`` only (its pending changes, under its own mode lock; the other systems'
    phase, mode and writers are left alone), or of every system (None).

    ``from_phase=None`` (the emergency path) goes to ``to_phase`` from whatever phase
    holds under the lock: a concurrent ``phase advance`` cannot make it give up.
    Returns the phase and mode it left (every system's: the highest phase, the least
    advanced mode), the replay's summary, and each system's phase and mode it left.
    """
    seen: dict[str, Any] = {}

    def finish(conn: sa.Connection, summary: dict[str, Any]) -> None:
        modes = read_modes(conn)
        if system is not None:
            phases = {system: read_phase(conn, system)}
            current: int | None = phases[system]
            seen["from_mode"] = modes[system]
            modes = {system: modes[system]}
        else:
            phases = read_phases(conn)
            current = max(phases.values()) if from_phase is None else common_phase(phases)
            if current is None:
                raise _different_phases(phases)
            # Systems in different modes (one rolled back on its own, say): the least
            # advanced stands for them all, and the metadata keeps each.
            seen["from_mode"] = common_mode(modes) or min(modes.values(), key=_MODE_ORDER.index)
        if from_phase is not None:  # what this rollback read first (or was told)
            require_from("roll back", from_phase, current, system)
        seen["from_phase"] = current
        seen["from_each"] = {
            s.value: {"phase": phases[s], "mode": m.value} for s, m in modes.items()
        }
        meta = {
            **extra,
            "action": "rollback",
            "system": system.value if system is not None else None,
            "from_phase": current,
            "to_phase": to_phase,
            "from_mode": seen["from_mode"].value,
            "from_modes": {s.value: m.value for s, m in modes.items()},
            "replay": _jsonable(summary),
        }
        write_phase(
            conn, to_phase, to_mode, system=system, actor=actor, reason=reason, metadata=meta
        )
        who = f"{system.value}: " if system is not None else ""
        came = mixed_origin(seen["from_each"]) or f"phase {current}"
        write_value(
            conn,
            ROLLBACK_KEY,
            f"{who}{came} -> {to_phase}, {to_mode.value}",
            actor=actor,
            reason=reason,
            metadata=meta,
        )

    replay = replay_pending(
        engine, settings, finish=finish, actor=actor, reason=reason, system=system
    )
    return seen["from_phase"], seen["from_mode"], replay, seen["from_each"]


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, int | float | str | bool | dict | None) else str(v)
        for k, v in summary.items()
    }


def _checked(actor: str, reason: str, what: str) -> tuple[str, str]:
    if not reason or not reason.strip():
        raise InputError(f"{what} needs a reason (--reason); it is recorded")
    if not actor or not actor.strip():
        raise InputError("an actor is required")
    return check_actor(actor), check_reason(reason).strip()


def rollback_current_phase(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str,
    reason: str,
    system: LegacySystemType | str | None = None,
    from_phase: int | None = None,
) -> PhaseChange:
    """One step back from the current phase, by that phase's procedure.

    ``from_phase``: only from that phase, compared again under the lock that changes it
    (:mod:`unistatus.migration.phase_from`); a retried step is refused, not a second one.

    ``system``: that legacy system only (from phase 4 only its pending changes are
    replayed, under its own mode lock; from phase 2 only its backfill is paused); the
    other systems' phase, mode and writers are untouched. None: every system, which must
    all be in one phase (GateError naming each system's phase otherwise).
    """
    chosen = LegacySystemType.parse(system) if system is not None else None
    actor, reason = _checked(actor, reason, "a rollback")
    with engine.connect() as conn:
        phases = read_phases(conn)
    phase = phases[chosen] if chosen is not None else common_phase(phases)
    require_from("roll back", from_phase, phase, chosen)
    if phase is None:
        raise _different_phases(phases)
    if phase == 0:
        who = f"{chosen.value} is in phase 0" if chosen is not None else "phase 0"
        raise GateError(f"{who} (not started): there is nothing to roll back")
    to_phase = ROLLBACK_TARGET[phase]
    to_mode = PHASES[to_phase].mode
    notes: list[str] = []
    if phase == 2:
        notes.append(_pause_backfill(engine, actor, reason, chosen))
        notes.append(BACKFILL_UNDO_NOTE)
    _, from_mode, replay, _ = _switch(
        engine,
        settings,
        system=chosen,
        from_phase=phase,
        to_phase=to_phase,
        to_mode=to_mode,
        actor=actor,
        reason=reason,
        extra={"notes": notes},
    )
    if replay["replayed"]:
        notes.append(f"replayed {replay['replayed']} change(s) to legacy first")
    if replay["conflicts"]:
        notes.append(CONFLICTS_NOTE.format(n=replay["conflicts"]))
    if (replay.get("undo_cleanup") or {}).get("undone"):
        notes.append("legacy status columns restored")
        notes += replay["undo_cleanup"].get("notes") or []
    if chosen is not None:
        notes.append("the other systems' phase and mode are unchanged")
    return PhaseChange(
        phase,
        to_phase,
        from_mode,
        to_mode,
        actor,
        reason,
        utcnow(),
        notes=notes,
        details={"replay": replay},
        system=chosen,
    )


def emergency_rollback(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str,
    reason: str,
    system: LegacySystemType | str | None = None,
) -> dict[str, Any]:
    """The fastest safe path to legacy: replay where legacy is stale, then LEGACY_ONLY
    and phase 0.

    ``system``: that legacy system only (its pending changes replayed, its mode set to
    LEGACY_ONLY and its phase to 0 under its own mode lock, its backfill paused); the
    other systems' phase, mode, writers and backfill are left as they are. None: every
    system.
    """
    chosen = LegacySystemType.parse(system) if system is not None else None
    actor, reason = _checked(actor, reason, "an emergency rollback")
    started = time.perf_counter()
    notes: list[str] = []
    # The phase is read under the exclusive lock, in the transaction that leaves it.
    phase, from_mode, replay, from_each = _switch(
        engine,
        settings,
        system=chosen,
        from_phase=None,
        to_phase=0,
        to_mode=DualWriteMode.LEGACY_ONLY,
        actor=actor,
        reason=reason,
        extra={"emergency": True},
    )
    if replay["conflicts"]:
        notes.append(CONFLICTS_NOTE.format(n=replay["conflicts"]))
    try:
        notes.append(_pause_backfill(engine, actor, reason, chosen))
    except Exception as exc:  # the switch is done; a pause failure must not hide it
        log.exception("could not pause the backfill after the emergency rollback")
        notes.append(f"could not pause the backfill: {one_line(exc)}")
    flag = f" --system {chosen.value.lower()}" if chosen is not None else ""
    notes.append(
        f"running adapters follow within {settings.mode_refresh_seconds:g} s; "
        f"return with `unistatus phase advance{flag}` (gated, one phase at a time)"
        + ("; the other systems' phase and mode are unchanged" if chosen is not None else "")
    )
    return {
        "emergency": True,
        "system": chosen.value if chosen is not None else None,
        "from_phase": phase,
        "to_phase": 0,
        "from_mode": from_mode.value,
        "to_mode": DualWriteMode.LEGACY_ONLY.value,
        # Each system's phase and mode it left (from_phase is the highest of them,
        # from_mode the least advanced: systems rolled back on their own differ).
        "from_systems": from_each,
        "actor": actor,
        "reason": reason,
        "replay": replay,
        "conflicts": replay["conflicts"],
        "notes": notes,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "at": utcnow().isoformat(),
    }
