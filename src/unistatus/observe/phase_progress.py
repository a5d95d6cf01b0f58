"""How far each phase has come, measured by what was done.

A bar full of gates that merely pass lies: at phase 0 the one gate into phase 1
(mapping coverage) passes on a fresh install, and entering phase 4 is only the first of
its steps. So a phase not yet entered shows 0 %, a phase left behind 100 %, and the
current phase its own measure: the backfill in phase 2, phase 4's steps (unified-only,
archive verified, legacy status columns retired), elsewhere the share of the gates into
the next phase that pass.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.control import get_modes
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration.archive import recorded_archive
from unistatus.migration.retire import legacy_columns_dropped

__all__ = ["PHASE_NAMES", "RETIREMENT_STEPS", "phase_bars", "read_retirement"]

PHASE_NAMES = {
    1: "Dual-write infrastructure",
    2: "Data backfill",
    3: "Unified primary",
    4: "Legacy retirement",
}
# Phase 4's steps, in the runbook's order, with the words both dashboards show.
RETIREMENT_STEPS = {
    "unified_only": "unified-only",
    "archive_verified": "archive verified",
    "columns_retired": "columns retired",
}


def read_retirement(engine: sa.Engine, settings: Settings) -> dict[str, bool]:
    """Which of phase 4's steps are done (keys of :data:`RETIREMENT_STEPS`)."""
    return {
        "unified_only": all(m is DualWriteMode.UNIFIED_ONLY for m in get_modes(engine).values()),
        "archive_verified": recorded_archive(engine) is not None,
        "columns_retired": legacy_columns_dropped(engine, settings),
    }


def phase_bars(
    phase: int | None,
    gates: list[dict[str, Any]] | None,
    backfill: dict[str, dict[str, Any]] | None,
    retirement: dict[str, bool] | None,
) -> list[dict[str, Any]]:
    """One bar per phase: ``percent`` is None when unknown; phase 4 lists its ``steps``."""
    bars: list[dict[str, Any]] = []
    for number, name in PHASE_NAMES.items():
        percent: float | None
        if phase is None:
            percent = None
        elif number < phase:
            percent = 100.0
        elif number == phase:
            percent = _current(number, gates, backfill, retirement)
        else:
            percent = 0.0
        bar: dict[str, Any] = {
            "phase": number,
            "name": name,
            "percent": percent,
            "current": number == phase,
        }
        if number == 4 and phase == 4:
            bar["steps"] = retirement
        bars.append(bar)
    return bars


def _current(
    number: int,
    gates: list[dict[str, Any]] | None,
    backfill: dict[str, dict[str, Any]] | None,
    retirement: dict[str, bool] | None,
) -> float | None:
    if number == 2 and backfill:
        known = [float(v) for v in (p.get("percent") for p in backfill.values()) if v is not None]
        return sum(known) / len(known) if known else None
    if number == 4:
        if retirement is None:
            return None
        return 100.0 * sum(retirement.values()) / len(retirement)
    if not gates:
        return None
    return 100.0 * sum(1 for g in gates if g.get("passed")) / len(gates)
