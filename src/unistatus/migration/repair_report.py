"""What a repair run did (:class:`RepairReport`): counts per kind and action, the first
entities' detail, errors and warnings; what ``repair --json`` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unistatus.migration.repair_plan import Strategy

__all__ = ["KEEP_ACTIONS", "RepairReport"]

KEEP_ACTIONS = 50  # entity-level detail kept in the report; counts are always complete


@dataclass
class RepairReport:
    """What a repair run did: counts, a few actions and errors (``as_dict`` to show it)."""

    strategy: Strategy
    dry_run: bool
    actor: str
    limit: int | None = None
    reason: str | None = None
    # Never overwrite the side the mode reads as the entity is locked (the monitor's
    # repair: the mode it chose its strategy by may have moved since).
    authoritative_only: bool = False
    examined: int = 0
    # A dry run counts here what it plans, as a real run what it writes (``limit`` caps
    # either); ``as_dict`` shows a dry run's as ``would_repair``.
    repaired: int = 0
    repaired_kinds: dict[str, int] = field(default_factory=dict)
    already_consistent: int = 0
    # Entities named (a queue row, a --from line) that neither side holds.
    not_found: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    queue_seen: int = 0
    queue_resolved: int = 0
    limit_reached: bool = False
    actions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Systems whose authoritative side (the one the mode reads) this strategy overwrote.
    warnings: list[str] = field(default_factory=list)
    # (system, action) of every plan that changes a value the other side holds: all of
    # them, where ``actions`` keeps the first KEEP_ACTIONS.
    overwrites: set[tuple[str, str]] = field(default_factory=set)
    duration_ms: float = 0.0

    @property
    def remaining(self) -> int:
        """Entities left unrepaired by this run: skipped, failed, or named but found on
        neither side."""
        return sum(self.skipped.values()) + self.failed + self.not_found

    @property
    def would_repair(self) -> int:
        """What a dry run found to repair (it repaired nothing); 0 for a real run."""
        return self.repaired if self.dry_run else 0

    def as_dict(self) -> dict[str, Any]:
        """The report as ``repair --json`` prints it. A dry run's plan is ``would_repair``
        and ``would_repair_kinds``, its ``repaired`` 0: as ``"repaired": 1040`` a script
        reading it took 1040 inconsistencies that remained for repaired."""
        kinds = dict(self.repaired_kinds)
        return {
            "strategy": self.strategy.value,
            "dry_run": self.dry_run,
            "actor": self.actor,
            "reason": self.reason,
            "limit": self.limit,
            "limit_reached": self.limit_reached,
            "examined": self.examined,
            "repaired": 0 if self.dry_run else self.repaired,
            "repaired_kinds": {} if self.dry_run else kinds,
            "would_repair": self.would_repair,
            "would_repair_kinds": kinds if self.dry_run else {},
            "already_consistent": self.already_consistent,
            "not_found": self.not_found,
            "skipped": dict(self.skipped),
            "failed": self.failed,
            "repair_queue": {"seen": self.queue_seen, "resolved": self.queue_resolved},
            "actions": list(self.actions),
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "duration_ms": round(self.duration_ms, 3),
        }
