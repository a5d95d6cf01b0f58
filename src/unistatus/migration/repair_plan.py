"""Deciding a repair, without a database: the strategies and ``plan_repair``.

From an entity's two rows (and the mode), what repairing it writes on which side, or
why it is skipped. What each kind of difference gets: ``docs/repair.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from unistatus.clock import as_utc
from unistatus.db.legacy import DATA_COLUMNS
from unistatus.domain import consistency
from unistatus.domain.consistency import InconsistencyKind as K
from unistatus.domain.copyable import uncopyable
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import InputError, UnistatusError

__all__ = ["MISSING_LEGACY", "RepairPlan", "Strategy", "plan_repair"]

_mapper = LegacyStatusMapper()
# A unified row without a legacy row in a mode that writes both (see plan_repair).
MISSING_LEGACY = K.MISSING_LEGACY.value


class Strategy(StrEnum):
    UNIFIED_WINS = "unified_wins"
    LEGACY_WINS = "legacy_wins"
    NEWEST_WINS = "newest_wins"

    @classmethod
    def parse(cls, value: str | Strategy) -> Strategy:
        try:
            return cls(str(value).strip().lower().replace("-", "_"))
        except ValueError:
            raise InputError(
                f"unknown strategy {value!r}; expected one of: {', '.join(s.value for s in cls)}"
            ) from None


@dataclass
class RepairPlan:
    """What repairing one entity will write (or why it will not)."""

    kinds: list[str]
    action: str  # insert_unified | write_unified | write_legacy | create_legacy | skip | none
    winner: str | None = None  # legacy | unified
    skip_reason: str | None = None
    legacy_values: dict[str, Any] = field(default_factory=dict)
    unified_values: dict[str, Any] = field(default_factory=dict)


def _winner(
    strategy: Strategy,
    legacy: Mapping[str, Any],
    unified: Mapping[str, Any],
    mode: DualWriteMode,
) -> str:
    if strategy is Strategy.LEGACY_WINS:
        return "legacy"
    if strategy is Strategy.UNIFIED_WINS:
        return "unified"
    lt, ut = as_utc(legacy.get("updated_at")), as_utc(unified.get("updated_at"))
    if lt is not None and ut is not None and lt != ut:
        return "legacy" if lt > ut else "unified"
    return "unified" if mode.reads_unified else "legacy"


def plan_repair(
    system: LegacySystemType,
    legacy: Mapping[str, Any] | None,
    unified: Mapping[str, Any] | None,
    strategy: Strategy,
    mode: DualWriteMode = DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY,
) -> RepairPlan:
    """Decide how to repair one entity from its two rows (see ``docs/repair.md``)."""
    if legacy is None and unified is not None and unified.get("legacy_id") is None:
        # Born without a legacy row: a create acknowledged under primary_wins in
        # DUAL_WRITE_UNIFIED_PRIMARY whose legacy INSERT was refused (queued), or one
        # made in UNIFIED_ONLY. No orphan, but legacy lacks it, never consistent. Where
        # the mode writes both sides its legacy row is made from unified (there is no
        # legacy side to win), as the rollback's replay makes it; in UNIFIED_ONLY legacy
        # is frozen (repair_entity skips it), and LEGACY_ONLY keeps it for an operator.
        if mode.is_dual or mode is DualWriteMode.UNIFIED_ONLY:
            return RepairPlan([MISSING_LEGACY], "create_legacy", "unified")
        return RepairPlan([MISSING_LEGACY], "skip", skip_reason=MISSING_LEGACY)
    found = consistency.compare(system, legacy, unified)
    kinds = sorted({i.kind.value for i in found})
    if not found:
        return RepairPlan(kinds, "none")
    if K.ORPHAN_UNIFIED in kinds:
        return RepairPlan(kinds, "skip", skip_reason=K.ORPHAN_UNIFIED.value)
    if K.UNMAPPABLE_LEGACY in kinds:
        return RepairPlan(kinds, "skip", skip_reason=K.UNMAPPABLE_LEGACY.value)
    assert legacy is not None
    forward = _mapper.to_unified(system, legacy["status"]).value
    if unified is not None and kinds == [K.LEGACY_STATUS_DRIFT.value]:
        # The statuses agree; only unified's image of the legacy status is stale. The
        # legacy row is what that image must show, whatever the strategy.
        values = {"legacy_status": legacy["status"]}
        return RepairPlan(kinds, "write_unified", "legacy", unified_values=values)
    # Legacy's shared fields a unified row cannot take (a NULL currency, a negative
    # amount): nothing to copy; the row waits, quarantined, for an operator to mend it.
    uncopyable_reason = uncopyable(legacy)
    if unified is None:
        if uncopyable_reason is not None:
            return RepairPlan(kinds, "skip", "legacy", skip_reason=uncopyable_reason)
        values = {name: legacy[name] for name in DATA_COLUMNS}
        values.update(status=forward, legacy_status=legacy["status"])
        return RepairPlan(kinds, "insert_unified", "legacy", unified_values=values)
    winner = _winner(strategy, legacy, unified, mode)
    if winner == "legacy":
        if uncopyable_reason is not None:
            return RepairPlan(kinds, "skip", winner, skip_reason=uncopyable_reason)
        values = {name: legacy[name] for name in DATA_COLUMNS}
        values["legacy_status"] = legacy["status"]
        if K.STATUS_MISMATCH in kinds:
            # A compatible refinement (RELEASE_PENDING for ACTIVE) is kept as it is.
            values["status"] = forward
        return RepairPlan(kinds, "write_unified", winner, unified_values=values)
    try:
        target = _mapper.to_legacy(
            system.transaction_type, unified["status"], current=legacy["status"]
        )
    except UnistatusError:
        # A unified status with no legacy image for this type: nothing safe to write.
        return RepairPlan(kinds, "skip", winner, skip_reason="unified_status_invalid")
    values = {name: unified[name] for name in DATA_COLUMNS}
    values["status"] = target
    return RepairPlan(
        kinds,
        "write_legacy",
        winner,
        legacy_values=values,
        unified_values={"legacy_status": target},
    )
