"""What a write will do, decided without the database.

:class:`Planner` turns a requested status (unified or legacy) into a target, and a
locked (or, on the fast path, just read) entity plus that target into a :class:`Plan`:
the current status it is judged from, the transition kind, the legacy value to write.
:func:`in_step` and :func:`one_statement` say whether a plan is a no-op and whether it
can be written as one guarded statement.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from enum import Enum
from typing import Any

from unistatus.adapter.model import Entity, Fallback, Plan
from unistatus.clock import utcnow
from unistatus.domain.copyable import uncopyable
from unistatus.domain.ids import LegacyRef
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import (
    DualWriteMode,
    LegacySystemType,
    UnifiedTransactionStatus,
    UnifiedTransactionType,
)
from unistatus.domain.transitions import TransitionKind, TransitionRules
from unistatus.errors import (
    InputError,
    InvalidStatusError,
    UncopyableLegacyRowError,
    UnmappableStoredStatusError,
)

__all__ = ["Planner", "in_step", "one_statement", "parse_type", "require_copyable"]


class Planner:
    """Decides status changes with the adapter's mapping and transition rules;
    ``check_status`` refuses a legacy value its status column cannot hold
    (:class:`~unistatus.adapter.storable.StorableStatus`); ``clock``: the time a change
    is stamped with."""

    def __init__(
        self,
        mapper: LegacyStatusMapper,
        rules: TransitionRules,
        check_status: Callable[[LegacySystemType, str], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.mapper = mapper
        self.rules = rules
        self.check_status = check_status
        self.clock = clock  # the time a change is stamped with (the database's)

    def target(
        self, ttype: UnifiedTransactionType, new_status: object
    ) -> tuple[UnifiedTransactionStatus, str | None]:
        """(unified target, explicit legacy value or None) for a unified or legacy status."""
        system = ttype.legacy_system
        if isinstance(new_status, UnifiedTransactionStatus):
            return self.mapper.parse_unified(ttype, new_status), None
        if isinstance(new_status, Enum):
            if not isinstance(new_status, system.status_enum):
                raise InputError(
                    f"{type(new_status).__name__}.{new_status.name} is not a status of "
                    f"{system.value} (a {ttype.value} transaction)"
                )
            value = str(new_status.value)
            return self.mapper.to_unified(system, value), value
        if not isinstance(new_status, str):
            raise InputError(f"status must be a string or a status enum, got {new_status!r}")
        if self.mapper.is_valid_unified(ttype, new_status):
            return UnifiedTransactionStatus(new_status), None
        if self.mapper.is_legacy_status(system, new_status):
            return self.mapper.to_unified(system, new_status), new_status
        raise InvalidStatusError(
            ttype.value,
            new_status,
            {s.value for s in self.mapper.valid_statuses(ttype)},
            self.mapper.legacy_statuses(system),
            system.value,
        )

    def change(
        self,
        entity: Entity,
        mode: DualWriteMode,
        new_status: object,
        reason: str,
        triggered_by: str,
        metadata: dict[str, Any] | None,
        force: bool,
    ) -> Plan:
        """The plan of a status change of ``entity`` (refusals raise UnistatusError)."""
        require_copyable(entity, mode)
        ttype = entity.ttype
        dst, explicit_legacy = self.target(ttype, new_status)
        unified, legacy = entity.unified, entity.legacy
        # The unified status is the current one whenever it is authoritative or agrees
        # with legacy: it may be a refinement legacy cannot express (RELEASE_PENDING vs
        # ACTIVE), and judging from legacy would lose it (and break the history chain).
        if unified is not None and (
            mode.reads_unified
            or legacy is None
            or self.mapper.is_compatible(entity.system, legacy["status"], unified["status"])
        ):
            src: UnifiedTransactionStatus | None = UnifiedTransactionStatus(unified["status"])
            src_legacy = (
                legacy["status"]
                if legacy is not None and mode.writes_legacy
                else unified["legacy_status"]
            )
        else:
            assert legacy is not None
            src_legacy = legacy["status"]
            src = self.mapper.try_to_unified(entity.system, src_legacy)
        if src is None:
            if not force:
                raise UnmappableStoredStatusError(
                    entity.system.value,
                    src_legacy,
                    entity=(
                        f"{entity.system.value.lower()}:{entity.legacy_id}"
                        if entity.legacy_id is not None
                        else entity.utx_id
                    ),
                    requested=getattr(new_status, "value", new_status),
                )
            if not reason or not reason.strip():
                raise InputError("overriding an unmappable current status needs a reason")
            kind = TransitionKind.OVERRIDE
        else:
            kind = self.rules.check(ttype, src, dst, force=force, reason=reason)
        dst_legacy = explicit_legacy or self.mapper.to_legacy(ttype, dst, current=src_legacy)
        if self.check_status is not None:
            self.check_status(entity.system, dst_legacy)
        return Plan(
            mode=mode,
            entity=entity,
            src=src,
            dst=dst,
            src_legacy=src_legacy,
            dst_legacy=dst_legacy,
            kind=kind,
            reason=reason,
            triggered_by=str(triggered_by),
            metadata=metadata,
            operation_id="",
            now=self.clock(),
        )


def in_step(plan: Plan) -> bool:
    """True when every side this mode writes already holds the target (a no-op)."""
    e, mode = plan.entity, plan.mode
    if mode.writes_legacy and e.legacy is not None and e.legacy["status"] != plan.dst_legacy:
        return False
    if not mode.writes_unified:
        return True
    u = e.unified
    return u is not None and u["status"] == plan.dst.value and u["legacy_status"] == plan.dst_legacy


def one_statement(plan: Plan, dml_cte: bool, fallback: Fallback) -> bool:
    """Whether this change can be written as one guarded statement (the hot path).

    Needs data-modifying CTEs (``dml_cte``), both rows present (or legacy alone in
    LEGACY_ONLY), and no savepoint between the sides (``primary_wins`` needs one).
    """
    e, mode = plan.entity, plan.mode
    if not dml_cte or not mode.writes_legacy or e.legacy is None:
        return False
    if not mode.writes_unified:
        return True
    return e.unified is not None and fallback == "strict"


def parse_type(value: object) -> UnifiedTransactionType:
    """A transaction type from its value or enum; InputError naming the valid ones."""
    try:
        return UnifiedTransactionType(str(value.value if isinstance(value, Enum) else value))
    except ValueError:
        hint = ""
        if isinstance(value, str):  # a legacy system's name (the CLI takes `--type cashout`)
            with suppress(InputError):
                meant = LegacySystemType.parse(value).transaction_type
                hint = f" ({value}'s transactions are {meant})"
        raise InputError(
            f"unknown transaction type {value!r}; expected one of: "
            + ", ".join(t.value for t in UnifiedTransactionType)
            + hint
        ) from None


def require_copyable(entity: Entity, mode: DualWriteMode) -> None:
    """UncopyableLegacyRowError when the change would make ``entity``'s unified row from
    a legacy row whose shared fields a unified row cannot take (refused before anything
    is written, as input: the database would refuse the row)."""
    if entity.unified is not None or entity.legacy is None or not mode.writes_unified:
        return
    assert entity.legacy_id is not None  # a legacy row in hand has its id
    why = uncopyable(entity.legacy)
    if why is not None:
        raise UncopyableLegacyRowError(str(LegacyRef(entity.system, entity.legacy_id)), why)
