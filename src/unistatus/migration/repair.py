"""``unistatus repair``: make legacy and unified agree again, one audited entity at a time.

Repairs what a fresh set-based detection and the adapter's repair queue find: each
entity under the adapter's locks, re-judged, the winning side written with one history
row. What each kind of difference gets, and UNIFIED_ONLY: ``docs/repair.md``.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from unistatus.adapter.rows import read_entity
from unistatus.adapter.writes import history_values, unified_row
from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings
from unistatus.db.control import read_mode
from unistatus.db.dialect import DialectOps, is_retryable, ops_for
from unistatus.db.legacy import DATA_COLUMNS, LegacyTable, resolve_legacy_tables
from unistatus.db.tables import (
    pending_legacy_changes,
    repair_queue,
    status_history,
    unified_transactions,
)
from unistatus.domain import consistency
from unistatus.domain.consistency import InconsistencyKind as K
from unistatus.domain.ids import UtxId, derive_utx_id, parse_entity_id
from unistatus.domain.inputs import check_reason
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.domain.transitions import TransitionRules
from unistatus.errors import InputError, StorageError, UnistatusError
from unistatus.migration.check import iter_inconsistent
from unistatus.migration.replay_conflicts import has_open_conflict

__all__ = [
    "RepairPlan",
    "RepairReport",
    "Strategy",
    "open_repair_count",
    "plan_repair",
    "run_repair",
]

log = logging.getLogger("unistatus.migration.repair")
U = unified_transactions
MAX_ATTEMPTS = 4
KEEP_ACTIONS = 50
# Legacy keys per detection read: the inconsistent rows of one chunk are held while they
# are repaired, so this bounds repair's memory even when everything differs.
DETECT_CHUNK = 10_000  # entity-level detail kept in the report; counts are always complete
_mapper = LegacyStatusMapper()
_rules = TransitionRules()


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
    action: str  # insert_unified | write_unified | write_legacy | skip | none
    winner: str | None = None  # legacy | unified
    skip_reason: str | None = None
    legacy_values: dict[str, Any] = field(default_factory=dict)
    unified_values: dict[str, Any] = field(default_factory=dict)


@dataclass
class RepairReport:
    strategy: Strategy
    dry_run: bool
    actor: str
    limit: int | None = None
    reason: str | None = None
    examined: int = 0
    repaired: int = 0
    repaired_kinds: dict[str, int] = field(default_factory=dict)
    already_consistent: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    queue_seen: int = 0
    queue_resolved: int = 0
    limit_reached: bool = False
    actions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    duration_ms: float = 0.0

    @property
    def remaining(self) -> int:
        """Entities still inconsistent after this run (skipped, failed, or past the limit)."""
        return sum(self.skipped.values()) + self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy.value,
            "dry_run": self.dry_run,
            "actor": self.actor,
            "reason": self.reason,
            "limit": self.limit,
            "limit_reached": self.limit_reached,
            "examined": self.examined,
            "repaired": self.repaired,
            "repaired_kinds": dict(self.repaired_kinds),
            "already_consistent": self.already_consistent,
            "skipped": dict(self.skipped),
            "failed": self.failed,
            "repair_queue": {"seen": self.queue_seen, "resolved": self.queue_resolved},
            "actions": list(self.actions),
            "errors": list(self.errors),
            "duration_ms": round(self.duration_ms, 3),
        }


# --- deciding (pure) ------------------------------------------------------------------


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
    """Decide how to repair one entity from its two rows (see the module docstring)."""
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
    if unified is None:
        values = {name: legacy[name] for name in DATA_COLUMNS}
        values.update(status=forward, legacy_status=legacy["status"])
        return RepairPlan(kinds, "insert_unified", "legacy", unified_values=values)
    winner = _winner(strategy, legacy, unified, mode)
    if winner == "legacy":
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


# --- applying -------------------------------------------------------------------------


def _jsonable(row: Mapping[str, Any] | None, names: tuple[str, ...]) -> dict[str, Any] | None:
    if row is None:
        return None
    out: dict[str, Any] = {}
    for name in names:
        value = row.get(name)
        out[name] = str(value) if isinstance(value, Decimal) else value
    return out


_L_AUDIT = ("status", *DATA_COLUMNS)
_U_AUDIT = ("status", "legacy_status", *DATA_COLUMNS)


class _Repairer:
    """Holds what every entity repair shares: tables, dialect, strategy, the report."""

    def __init__(
        self,
        engine: sa.Engine,
        settings: Settings,
        tables: dict[LegacySystemType, LegacyTable],
        report: RepairReport,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.ops: DialectOps = ops_for(engine)
        self.tables = tables
        self.report = report
        self.seen: set[tuple[LegacySystemType, int | None, str | None]] = set()

    @property
    def full(self) -> bool:
        limit = self.report.limit
        return limit is not None and self.report.repaired >= limit

    # one entity ----------------------------------------------------------------------

    def entity(self, system: LegacySystemType, legacy_id: int | None, utx_id: str | None) -> None:
        """Repair one entity (idempotent; an entity is handled once per run)."""
        key = (system, legacy_id, None if legacy_id is not None else utx_id)
        if key in self.seen or self.full:
            return
        self.seen.add(key)
        self.report.examined += 1
        for attempt in range(MAX_ATTEMPTS):
            try:
                if self.report.dry_run:
                    with self.engine.connect() as conn:
                        self._one(conn, system, legacy_id, utx_id, lock=False)
                else:
                    with self.ops.write_transaction() as conn:
                        self.ops.bound_statements(
                            conn, self.settings.statement_timeout_ms, self.settings.lock_timeout_ms
                        )
                        self._one(conn, system, legacy_id, utx_id, lock=True)
                return
            except sa.exc.DBAPIError as exc:
                text = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                if is_retryable(exc) and attempt + 1 < MAX_ATTEMPTS:
                    time.sleep(0.01 * (attempt + 1) * (1 + random.random()))
                    continue
                self.report.failed += 1
                self._note_error(f"{system.value}:{legacy_id or utx_id}: {text}")
                return

    def _note_error(self, message: str) -> None:
        log.warning("repair failed: %s", message)
        if len(self.report.errors) < KEEP_ACTIONS:
            self.report.errors.append(message)

    def _one(
        self,
        conn: sa.Connection,
        system: LegacySystemType,
        legacy_id: int | None,
        utx_id: str | None,
        *,
        lock: bool,
    ) -> None:
        report = self.report
        if lock:
            # Mode lock, then legacy row, then unified row: the adapter's order.
            self.ops.mode_shared_lock(conn)
        mode = read_mode(conn)
        lt = self.tables[system]
        assert lt.status is not None  # resolved with require_status: repair reads it
        entity = read_entity(conn, lt, legacy_id, utx_id, lock=lock)
        legacy, unified = entity.legacy, entity.unified
        plan = plan_repair(system, legacy, unified, report.strategy, mode)
        frozen = mode is DualWriteMode.UNIFIED_ONLY and plan.action not in ("none", "skip")
        if frozen and not _allowed_frozen(conn, plan, unified):
            plan = RepairPlan(plan.kinds, "skip", skip_reason=LEGACY_FROZEN)
        if plan.action not in ("none", "skip") and has_open_conflict(
            conn,
            system,
            legacy_id if legacy_id is not None else (unified or {}).get("legacy_id"),
            unified["id"] if unified else utx_id,
        ):
            # The replay kept legacy on purpose (e.g. a payout confirmed while legacy
            # was written alone): the operator decides it, never a repair strategy.
            plan = RepairPlan(plan.kinds, "skip", skip_reason=REPLAY_CONFLICT)
        if plan.action == "none":
            report.already_consistent += 1
            if not report.dry_run:
                self._resolve_queue(conn, system, legacy_id, utx_id, "already consistent")
            return
        if plan.action == "skip":
            reason = plan.skip_reason or "skipped"
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
            self._keep(system, legacy_id, utx_id, plan, None)
            return
        op_id = str(uuid.uuid4())
        if not report.dry_run:
            if not self._write(conn, lt, legacy, unified, plan, mode, op_id):
                report.already_consistent += 1  # a concurrent insert won the race
                return
            self._resolve_queue(
                conn,
                system,
                legacy_id,
                utx_id,
                f"repaired by {report.actor} ({report.strategy.value}, {plan.winner} wins), "
                f"operation {op_id}",
            )
        report.repaired += 1
        for kind in plan.kinds:
            report.repaired_kinds[kind] = report.repaired_kinds.get(kind, 0) + 1
        self._keep(system, legacy_id, utx_id, plan, op_id)

    def _keep(
        self,
        system: LegacySystemType,
        legacy_id: int | None,
        utx_id: str | None,
        plan: RepairPlan,
        op_id: str | None,
    ) -> None:
        if len(self.report.actions) >= KEEP_ACTIONS:
            return
        self.report.actions.append(
            {
                "system": system.value,
                "legacy_id": legacy_id,
                "transaction_id": utx_id,
                "kinds": plan.kinds,
                "action": plan.action,
                "winner": plan.winner,
                "skip_reason": plan.skip_reason,
                "operation_id": op_id,
            }
        )

    def _write(
        self,
        conn: sa.Connection,
        lt: LegacyTable,
        legacy: Mapping[str, Any] | None,
        unified: Mapping[str, Any] | None,
        plan: RepairPlan,
        mode: DualWriteMode,
        op_id: str,
    ) -> bool:
        assert legacy is not None and lt.status is not None
        system = lt.system
        now = utcnow()
        utx_id = unified["id"] if unified else derive_utx_id(system, legacy["id"])
        after_legacy = dict(legacy)
        after_unified: dict[str, Any] = dict(unified) if unified else {}
        if plan.action == "insert_unified":
            values = unified_row(
                system,
                utx_id=utx_id,
                legacy_id=legacy["id"],
                data=plan.unified_values,
                status=plan.unified_values["status"],
                legacy_status=plan.unified_values["legacy_status"],
                origin="repair",
                created_at=legacy["created_at"] or now,
                updated_at=now,
            )
            stmt = self.ops.insert(U).values(values).on_conflict_do_nothing()
            if conn.execute(stmt).rowcount == 0:
                return False
            after_unified = values
        if plan.action == "write_unified":
            assert unified is not None
            conn.execute(
                sa.update(U)
                .where(U.c.id == unified["id"])
                .values(**plan.unified_values, version=U.c.version + 1, updated_at=now)
            )
            after_unified.update(plan.unified_values)
        if plan.action == "write_legacy":
            assert unified is not None
            values = {lt.column(k).key: v for k, v in plan.legacy_values.items()}
            values[lt.updated_at.key] = now
            conn.execute(sa.update(lt.table).where(lt.id == legacy["id"]).values(values))
            conn.execute(
                sa.update(U)
                .where(U.c.id == unified["id"])
                .values(**plan.unified_values, version=U.c.version + 1, updated_at=now)
            )
            after_legacy.update(plan.legacy_values)
            after_unified.update(plan.unified_values)
        src = unified["status"] if unified else None
        dst = after_unified.get("status")
        conn.execute(
            sa.insert(status_history).values(
                history_values(
                    transaction_id=utx_id,
                    legacy_system=system.value,
                    legacy_id=legacy["id"],
                    from_status=src,
                    to_status=dst,
                    from_legacy_status=legacy["status"],
                    to_legacy_status=after_legacy["status"],
                    reason=(
                        f"repair of {', '.join(plan.kinds)}: {self.report.strategy.value}, "
                        f"{plan.winner} side kept"
                        + (f"; {self.report.reason}" if self.report.reason else "")
                    ),
                    triggered_by="repair",
                    meta={
                        "strategy": self.report.strategy.value,
                        "winner": plan.winner,
                        "action": plan.action,
                        "kinds": plan.kinds,
                        "actor": self.report.actor,
                        "reason": self.report.reason,
                        "before": {
                            "legacy": _jsonable(legacy, _L_AUDIT),
                            "unified": _jsonable(unified, _U_AUDIT),
                        },
                        "after": {
                            "legacy": _jsonable(after_legacy, _L_AUDIT),
                            "unified": _jsonable(after_unified, _U_AUDIT),
                        },
                    },
                    operation_id=op_id,
                    mode=mode.value,
                    override=_is_override(system, src, dst),
                    created_at=now,
                )
            )
        )
        return True

    def _resolve_queue(
        self,
        conn: sa.Connection,
        system: LegacySystemType,
        legacy_id: int | None,
        utx_id: str | None,
        resolution: str,
    ) -> None:
        match = []
        if legacy_id is not None:
            match.append(
                sa.and_(
                    repair_queue.c.legacy_system == system.value,
                    repair_queue.c.legacy_id == legacy_id,
                )
            )
            match.append(repair_queue.c.transaction_id == derive_utx_id(system, legacy_id))
        if utx_id is not None:
            match.append(repair_queue.c.transaction_id == utx_id)
        result = conn.execute(
            sa.update(repair_queue)
            .where(repair_queue.c.resolved_at.is_(None), sa.or_(*match))
            .values(resolved_at=utcnow(), resolution=resolution[:2000])
        )
        self.report.queue_resolved += max(result.rowcount, 0)

    # sources -------------------------------------------------------------------------

    def queue(self) -> None:
        """Every unresolved repair-queue row, oldest first (keyset pages)."""
        last = 0
        while not self.full:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(
                        repair_queue.c.id,
                        repair_queue.c.transaction_id,
                        repair_queue.c.legacy_system,
                        repair_queue.c.legacy_id,
                    )
                    .where(repair_queue.c.resolved_at.is_(None), repair_queue.c.id > last)
                    .order_by(repair_queue.c.id)
                    .limit(1000)
                ).all()
            if not rows:
                return
            for row in rows:
                last = row.id
                self.report.queue_seen += 1
                target = _queue_target(row.transaction_id, row.legacy_system, row.legacy_id)
                if target is None:
                    self.report.skipped["unidentifiable_queue_row"] = (
                        self.report.skipped.get("unidentifiable_queue_row", 0) + 1
                    )
                    continue
                self.entity(*target)
                if self.full:
                    return

    def detected(self) -> None:
        """Every pair the set-based rule flags now (fresh read, chunk by chunk)."""
        for system, lt in self.tables.items():
            for rows in iter_inconsistent(self.engine, lt, chunk=DETECT_CHUNK):
                for row in rows:
                    if self.full:
                        return
                    self.entity(system, row.legacy_id, row.transaction_id)


def _queue_target(
    utx_id: str | None, legacy_system: str | None, legacy_id: int | None
) -> tuple[LegacySystemType, int | None, str | None] | None:
    if legacy_system and legacy_id is not None:
        try:
            return LegacySystemType.parse(legacy_system), int(legacy_id), utx_id
        except UnistatusError:
            return None
    if utx_id:
        try:
            ref = parse_entity_id(utx_id)
        except UnistatusError:
            return None
        derived = ref.derived_ref if isinstance(ref, UtxId) else None
        if derived is not None:
            return derived.system, derived.legacy_id, utx_id
        if legacy_system:
            try:
                return LegacySystemType.parse(legacy_system), None, utx_id
            except UnistatusError:
                return None
    return None


def _is_override(system: LegacySystemType, src: str | None, dst: str | None) -> bool:
    """True when repair moved the unified status along a path the rules do not list."""
    if src is None or dst is None or src == dst:
        return False
    try:
        return dst not in {s.value for s in _rules.allowed(system.transaction_type, src)}
    except ValueError:
        return True


LEGACY_FROZEN = "legacy_frozen"  # skip reason in UNIFIED_ONLY: only a rollback writes legacy
REPLAY_CONFLICT = "replay_conflict"  # skip reason: `unistatus rollback resolve` decides it


def _allowed_frozen(
    conn: sa.Connection, plan: RepairPlan, unified: Mapping[str, Any] | None
) -> bool:
    """What repair may write while legacy is frozen (UNIFIED_ONLY): nothing, or a stale
    ``legacy_status`` of a transaction with no change awaiting replay.

    Legacy is not written in UNIFIED_ONLY, so the legacy row of such a transaction is
    its latest legacy value, and the image the retirement's undo refills from must show
    it. A transaction with a pending change is left alone: its image is newer than the
    frozen row by design, and the replay brings legacy up to it. (Called with both rows
    locked, so no adapter write can add a pending change meanwhile.)
    """
    if plan.kinds != [K.LEGACY_STATUS_DRIFT.value] or unified is None:
        return False
    pending = conn.execute(
        sa.select(pending_legacy_changes.c.id)
        .where(
            pending_legacy_changes.c.transaction_id == unified["id"],
            pending_legacy_changes.c.replayed_at.is_(None),
        )
        .limit(1)
    ).first()
    return pending is None


def repair_in(
    conn: sa.Connection,
    engine: sa.Engine,
    settings: Settings,
    tables: dict[LegacySystemType, LegacyTable],
    system: LegacySystemType,
    legacy_id: int | None,
    utx_id: str | None,
    *,
    strategy: Strategy,
    actor: str,
    reason: str,
) -> RepairReport:
    """Repair one transaction inside the caller's write transaction (no retry, no queue
    sweep): the caller commits or rolls back, with whatever else it wrote."""
    report = RepairReport(strategy, False, actor, None, reason)
    _Repairer(engine, settings, tables, report)._one(conn, system, legacy_id, utx_id, lock=True)
    return report


def run_repair(
    engine: sa.Engine,
    settings: Settings,
    *,
    strategy: Strategy | str,
    dry_run: bool = False,
    limit: int | None = None,
    actor: str = "repair",
    reason: str | None = None,
) -> RepairReport:
    """Repair the repair queue, then everything a fresh detection finds (see module doc).

    ``limit`` caps the number of entities repaired; ``dry_run`` plans and counts without
    writing anything. ``reason`` (the operator's why; the CLI requires it without
    ``--dry-run``) goes into every history row the repair writes, with ``actor``.
    """
    chosen = Strategy.parse(strategy)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer, got {limit!r}")
    if not actor or not str(actor).strip():
        raise InputError("actor is required (who runs the repair; recorded in the history)")
    tables = resolve_legacy_tables(engine, settings)
    if reason is not None and not reason.strip():
        raise InputError("reason must not be blank (why the repair runs; recorded)")
    if reason is not None:
        reason = check_reason(reason)
    report = RepairReport(chosen, dry_run, str(actor), limit, reason.strip() if reason else None)
    started = time.perf_counter()
    repairer = _Repairer(engine, settings, tables, report)
    try:
        repairer.queue()
        if not repairer.full:
            repairer.detected()
    except sa.exc.OperationalError as exc:
        raise StorageError(f"repair stopped: {str(exc.orig).strip()}") from None
    report.limit_reached = repairer.full
    report.duration_ms = (time.perf_counter() - started) * 1000
    return report


def open_repair_count(engine: sa.Engine) -> int:
    """Unresolved rows of the adapter's repair queue (what still needs a repair run)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(repair_queue)
                .where(repair_queue.c.resolved_at.is_(None))
            ).scalar_one()
        )
