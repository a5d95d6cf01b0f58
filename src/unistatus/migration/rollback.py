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
from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.control import common_mode, read_modes, write_mode, write_value
from unistatus.db.failures import one_line
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import GateError, InputError
from unistatus.migration.phases import (
    PHASES,
    ROLLBACK_KEY,
    PhaseChange,
    read_phase,
    write_phase,
)
from unistatus.migration.replay import replay_pending

__all__ = [
    "ROLLBACK_TARGET",
    "emergency_rollback",
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


def _pause_backfill(engine: sa.Engine, settings: Settings, actor: str, reason: str) -> str:
    pause(engine, actor=actor, reason=reason)
    return "backfill workers paused (they wait before their next batch)"


def _switch(
    engine: sa.Engine,
    settings: Settings,
    *,
    from_phase: int | None,
    to_phase: int,
    to_mode: DualWriteMode,
    actor: str,
    reason: str,
    extra: dict[str, Any],
) -> tuple[int, DualWriteMode, dict[str, Any]]:
    """Replay what legacy has not seen, then set phase and mode in the same transaction.

    ``from_phase=None`` (the emergency path) goes to ``to_phase`` from whatever phase
    holds under the lock: a concurrent ``phase advance`` cannot make it give up.
    Returns the phase and mode it left, and the replay's summary.
    """
    seen: dict[str, Any] = {}

    def finish(conn: sa.Connection, summary: dict[str, Any]) -> None:
        current = read_phase(conn)
        if from_phase is not None and current != from_phase:
            raise GateError("the phase changed during the rollback; check `phase status`")
        seen["from_phase"] = current
        modes = read_modes(conn)
        # Systems in different modes (one rolled back on its own, say): the least
        # advanced stands for them all, and the metadata keeps each.
        seen["from_mode"] = common_mode(modes) or min(modes.values(), key=_MODE_ORDER.index)
        meta = {
            **extra,
            "action": "rollback",
            "from_phase": current,
            "to_phase": to_phase,
            "from_mode": seen["from_mode"].value,
            "from_modes": {s.value: m.value for s, m in modes.items()},
            "replay": _jsonable(summary),
        }
        write_phase(conn, to_phase, to_mode, actor=actor, reason=reason, metadata=meta)
        write_value(
            conn,
            ROLLBACK_KEY,
            f"phase {current} -> {to_phase}, {to_mode.value}",
            actor=actor,
            reason=reason,
            metadata=meta,
        )

    replay = replay_pending(engine, settings, finish=finish, actor=actor, reason=reason)
    return seen["from_phase"], seen["from_mode"], replay


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, int | float | str | bool | dict | None) else str(v)
        for k, v in summary.items()
    }


def rollback_current_phase(
    engine: sa.Engine, settings: Settings, *, actor: str, reason: str
) -> PhaseChange:
    """One step back from the current phase, by that phase's procedure."""
    if not reason or not reason.strip():
        raise InputError("a rollback needs a reason (--reason); it is recorded")
    if not actor or not actor.strip():
        raise InputError("an actor is required")
    reason = check_reason(reason)
    actor = check_actor(actor)
    with engine.connect() as conn:
        phase = read_phase(conn)
    if phase == 0:
        raise GateError("phase 0 (not started): there is nothing to roll back")
    to_phase = ROLLBACK_TARGET[phase]
    to_mode = PHASES[to_phase].mode
    notes: list[str] = []
    if phase == 2:
        notes.append(_pause_backfill(engine, settings, actor, reason))
        notes.append(BACKFILL_UNDO_NOTE)
    _, from_mode, replay = _switch(
        engine,
        settings,
        from_phase=phase,
        to_phase=to_phase,
        to_mode=to_mode,
        actor=actor,
        reason=reason.strip(),
        extra={"notes": notes},
    )
    if replay["replayed"]:
        notes.append(f"replayed {replay['replayed']} change(s) to legacy first")
    if replay["conflicts"]:
        notes.append(CONFLICTS_NOTE.format(n=replay["conflicts"]))
    if replay.get("undo_cleanup"):
        notes.append("legacy status columns restored")
    return PhaseChange(
        phase,
        to_phase,
        from_mode,
        to_mode,
        actor,
        reason.strip(),
        utcnow(),
        notes=notes,
        details={"replay": replay},
    )


def emergency_rollback(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str,
    reason: str,
    system: LegacySystemType | str | None = None,
) -> dict[str, Any]:
    """The fastest safe path to legacy: replay where legacy is stale, then LEGACY_ONLY.

    ``system``: that legacy system only (its pending changes replayed, its mode set to
    LEGACY_ONLY under its own mode lock, its backfill paused); the other systems' mode,
    writers, backfill and the phase are left as they are. None: every system, phase 0.
    """
    if system is not None:
        return _emergency_of_system(
            engine, settings, LegacySystemType.parse(system), actor=actor, reason=reason
        )
    if not reason or not reason.strip():
        raise InputError("an emergency rollback needs a reason; it is recorded")
    if not actor or not actor.strip():
        raise InputError("an actor is required")
    reason = check_reason(reason)
    actor = check_actor(actor)
    started = time.perf_counter()
    notes: list[str] = []
    # The phase is read under the exclusive lock, in the transaction that leaves it.
    phase, from_mode, replay = _switch(
        engine,
        settings,
        from_phase=None,
        to_phase=0,
        to_mode=DualWriteMode.LEGACY_ONLY,
        actor=actor,
        reason=reason.strip(),
        extra={"emergency": True},
    )
    if replay["conflicts"]:
        notes.append(CONFLICTS_NOTE.format(n=replay["conflicts"]))
    try:
        notes.append(_pause_backfill(engine, settings, actor, reason))
    except Exception as exc:  # the switch is done; a pause failure must not hide it
        log.exception("could not pause the backfill after the emergency rollback")
        notes.append(f"could not pause the backfill: {one_line(exc)}")
    notes.append(
        f"running adapters follow within {settings.mode_refresh_seconds:g} s; "
        "return with `unistatus phase advance` (gated, one phase at a time)"
    )
    return {
        "emergency": True,
        "from_phase": phase,
        "to_phase": 0,
        "from_mode": from_mode.value,
        "to_mode": DualWriteMode.LEGACY_ONLY.value,
        "actor": actor,
        "reason": reason.strip(),
        "replay": replay,
        "conflicts": replay["conflicts"],
        "notes": notes,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "at": utcnow().isoformat(),
    }


def _emergency_of_system(
    engine: sa.Engine, settings: Settings, system: LegacySystemType, *, actor: str, reason: str
) -> dict[str, Any]:
    """:func:`emergency_rollback` of one system."""
    if not reason or not reason.strip():
        raise InputError("an emergency rollback needs a reason; it is recorded")
    if not actor or not actor.strip():
        raise InputError("an actor is required")
    reason, actor = check_reason(reason).strip(), check_actor(actor)
    started = time.perf_counter()
    notes: list[str] = []
    seen: dict[str, Any] = {}
    to_mode = DualWriteMode.LEGACY_ONLY

    def finish(conn: sa.Connection, summary: dict[str, Any]) -> None:
        # Under the system's exclusive mode lock, with the last replayed batch.
        seen["from_mode"] = read_modes(conn)[system]
        meta = {
            "action": "rollback",
            "emergency": True,
            "system": system.value,
            "from_mode": seen["from_mode"].value,
            "replay": _jsonable(summary),
        }
        write_mode(conn, to_mode, system=system, actor=actor, reason=reason, metadata=meta)
        write_value(
            conn,
            ROLLBACK_KEY,
            f"{system.value}: {seen['from_mode'].value} -> {to_mode.value}",
            actor=actor,
            reason=reason,
            metadata=meta,
        )

    replay = replay_pending(
        engine, settings, finish=finish, actor=actor, reason=reason, system=system
    )
    if replay["conflicts"]:
        notes.append(CONFLICTS_NOTE.format(n=replay["conflicts"]))
    try:
        pause(engine, actor=actor, reason=reason, system=system)
        notes.append(f"backfill of {system.value} paused (the other systems' goes on)")
    except Exception as exc:  # the switch is done; a pause failure must not hide it
        log.exception("could not pause the backfill after the emergency rollback")
        notes.append(f"could not pause the backfill: {one_line(exc)}")
    notes.append(
        f"running adapters follow within {settings.mode_refresh_seconds:g} s; the other "
        "systems' mode and the phase are unchanged"
    )
    return {
        "emergency": True,
        "system": system.value,
        "from_mode": seen["from_mode"].value,
        "to_mode": to_mode.value,
        "actor": actor,
        "reason": reason,
        "replay": replay,
        "conflicts": replay["conflicts"],
        "notes": notes,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "at": utcnow().isoformat(),
    }
