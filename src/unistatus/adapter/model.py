"""What the DualWriteAdapter hands out and works with: results, events, entities, plans.

The bottom of the adapter package: every other module of it uses these, and this
module uses none of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from unistatus.clock import utcnow
from unistatus.db.legacy import LEGACY_COLUMNS
from unistatus.domain.ids import derive_utx_id
from unistatus.domain.statuses import (
    DualWriteMode,
    LegacySystemType,
    UnifiedTransactionStatus,
    UnifiedTransactionType,
)
from unistatus.domain.transitions import TransitionKind

__all__ = [
    "UNIFIED_LOCK_KEYS",
    "DualWriteResult",
    "Entity",
    "Fallback",
    "ModeChanged",
    "OperationEvent",
    "Plan",
    "Relinked",
    "WriteLost",
]

# What a dual write does when its secondary side fails: roll all back, or keep the
# primary side and queue a repair.
Fallback = Literal["strict", "primary_wins"]
# What a write needs of the unified row it locks (fewer columns: less to fetch and decode).
UNIFIED_LOCK_KEYS = ("id", "status", "legacy_status", "version")


@dataclass
class DualWriteResult:
    """What a write did.

    ``overall_success`` False means the write failed; with ``outcome_unknown`` also True,
    the connection was lost after the write may have reached the server (its statement
    or its COMMIT was sent, the reply never came) and no later attempt could settle it:
    it may have committed. Read the status, or repeat the call: a status change is
    re-planned from what is stored (a change already applied is a no-op), a create is
    safe to repeat only with the same ``idempotency_key``.

    ``error`` says why the write failed, or (``has_inconsistency``, ``primary_wins``) why
    its secondary side did, in the database's own words: for the caller's log, not its
    users, for they can quote the refused row (any caller's values) and name tables and
    constraints. The HTTP service answers with an ``error_id`` instead, under which its
    log keeps them.
    """

    operation_id: str
    entity_id: str | None
    legacy_entity_id: int | None
    mode: DualWriteMode
    primary_success: bool
    secondary_success: bool
    overall_success: bool
    has_inconsistency: bool = False
    error: str | None = None
    duration_ms: float = 0.0
    status: UnifiedTransactionStatus | None = None
    legacy_status: str | None = None
    changed: bool = True
    legacy_system: LegacySystemType | None = None
    # The write may or may not have committed (see the class docstring).
    outcome_unknown: bool = False
    # A create whose idempotency key was seen before: the first call's result, as it
    # was then; this call wrote nothing.
    replayed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation_id": self.operation_id,
            "entity_id": self.entity_id,
            "legacy_system": self.legacy_system.value if self.legacy_system else None,
            "legacy_entity_id": self.legacy_entity_id,
            "mode": self.mode.value,
            "primary_success": self.primary_success,
            "secondary_success": self.secondary_success,
            "overall_success": self.overall_success,
            "has_inconsistency": self.has_inconsistency,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 3),
            "status": self.status.value if self.status else None,
            "legacy_status": self.legacy_status,
            "changed": self.changed,
            "outcome_unknown": self.outcome_unknown,
            "replayed": self.replayed,
        }


@dataclass
class OperationEvent:
    """Handed to observers after every adapter operation (for metrics)."""

    operation: str
    mode: DualWriteMode
    success: bool
    duration_ms: float
    shadow_mismatch: bool = False
    error: str | None = None
    # A write refused for bad input (an invalid transition lost to a race, an unknown
    # status) is the caller's error, not the system's: success stays True, as HTTP keeps
    # 4xx out of the 5xx error rate that alerts and gates watch.
    refused: bool = False
    # A failure after which the write may have committed (DualWriteResult.outcome_unknown).
    outcome_unknown: bool = False
    # A write made in the caller's transaction (``connection=``) that the caller rolled
    # back: success is False, error says so; the statistics count it as rolled back,
    # neither a success nor an error.
    rolled_back: bool = False
    # The legacy system of the entity written (None: not known, e.g. a read that failed).
    system: LegacySystemType | None = None
    # What kind of failure (None on success): "connection_limit" (the server kept
    # refusing connections for a role's CONNECTION LIMIT or max_connections: up, but
    # full), "outcome_unknown", "queue_timeout", "interrupted", "database" (any other).
    error_kind: str | None = None


@dataclass
class Entity:
    """A transaction as locked inside a write: its legacy row and/or its unified row."""

    system: LegacySystemType
    legacy_id: int | None
    legacy: Mapping[str, Any] | None
    unified: Mapping[str, Any] | None
    # The unified row's id where its row was not read (LEGACY_ONLY): the id the caller
    # gave, or the one the write looked up. A transaction born unified and replayed into
    # legacy keeps its id, which is not the one its legacy row's id derives.
    known_id: str | None = None

    @property
    def ttype(self) -> UnifiedTransactionType:
        return self.system.transaction_type

    @property
    def utx_id(self) -> str:
        if self.unified is not None:
            return str(self.unified["id"])
        if self.known_id is not None:
            return self.known_id
        assert self.legacy_id is not None
        return derive_utx_id(self.system, self.legacy_id)

    @classmethod
    def from_row(cls, system: LegacySystemType, legacy_id: int, row: Sequence[Any]) -> Entity:
        """From a ``lock_legacy`` / ``read_legacy`` row (LEGACY_COLUMNS), or a ``lock_both``
        / ``read_both`` row (LEGACY_COLUMNS then UNIFIED_LOCK_KEYS)."""
        n = len(LEGACY_COLUMNS)
        legacy = dict(zip(LEGACY_COLUMNS, row[:n], strict=True))
        unified = dict(zip(UNIFIED_LOCK_KEYS, row[n:], strict=True)) if len(row) > n else None
        return cls(system, legacy_id, legacy, unified)


class ModeChanged(Exception):
    """The mode moved while this write waited for its lock: retry under the new mode."""


class Relinked(ModeChanged):
    """The transaction was given its legacy row (``unistatus repair``, the rollback's
    replay) after this write looked its legacy id up and before it locked the unified
    row: the write starts over, so that it locks that legacy row first (the adapter's
    lock order) and writes it. In the caller's transaction, which cannot start over, the
    write runs again there (:mod:`unistatus.adapter.caller`)."""


class WriteLost(Exception):
    """The connection was lost while a statement that commits by itself (autocommit) was
    in flight: it may have committed. ``error`` is the driver's error, as SQLAlchemy
    wrapped it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Plan:
    """What one status change will write."""

    mode: DualWriteMode
    entity: Entity
    src: UnifiedTransactionStatus | None
    dst: UnifiedTransactionStatus
    src_legacy: str | None
    dst_legacy: str
    kind: TransitionKind
    reason: str
    triggered_by: str
    metadata: dict[str, Any] | None
    operation_id: str
    now: Any = field(default_factory=utcnow)
