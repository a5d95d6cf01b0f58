"""Repairing one entity inside a given connection: lock, re-judge, write, audit.

The rows are read under the adapter's locks (mode, legacy, unified), the plan is made
afresh, the winning side written with one history row, and the entity's repair-queue
rows closed; what happened is counted in a ``RepairReport``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from unistatus.adapter.model import Entity, Relinked
from unistatus.adapter.rows import read_entity, read_legacy_row
from unistatus.adapter.writes import history_values, unified_row
from unistatus.backfill.statements import BEYOND_UTX_RANGE
from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.dialect import DialectOps, ops_for
from unistatus.db.failures import interrupt_behind, one_line
from unistatus.db.legacy import DATA_COLUMNS, LegacyTable
from unistatus.db.mode_reads import read_mode
from unistatus.db.retry import fails_every_write, is_retryable
from unistatus.db.rowcount import affected
from unistatus.db.server_clock import as_database_reads, clock_of
from unistatus.db.tables import pending_legacy_changes, status_history, unified_transactions
from unistatus.domain.consistency import InconsistencyKind as K
from unistatus.domain.ids import derive_utx_id, within_utx_range
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.domain.transitions import TransitionRules
from unistatus.errors import StorageError
from unistatus.migration.repair_plan import RepairPlan, Strategy, plan_repair
from unistatus.migration.repair_queue import resolve_queued
from unistatus.migration.repair_report import KEEP_ACTIONS, RepairReport
from unistatus.migration.replay_apply import (
    create_legacy_rows,
    create_operations,
    followed,
    legacy_now,
)
from unistatus.migration.replay_conflicts import has_open_conflict

__all__ = [
    "EntityRepair",
    "LegacyHeld",
    "legacy_took",
    "repair_in",
]

log = logging.getLogger("unistatus.migration.repair")
U = unified_transactions
# The kinds whose repair changes a value the other side holds (not a row made, nor the
# legacy_status image of a status both sides agree on).
OVERWRITING = {"status_mismatch", "field_mismatch"}
_rules = TransitionRules()
LEGACY_FROZEN = "legacy_frozen"  # skip reason in UNIFIED_ONLY: only a rollback writes legacy
REPLAY_CONFLICT = "replay_conflict"  # skip reason: `unistatus rollback resolve` decides it
# Skip reason of an ``authoritative_only`` run (the monitor's): the strategy would
# overwrite the side the entity's mode reads now (a rollback came in between).
SIDE_READ = "side_read_by_mode"


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


class EntityRepair:
    """What every entity repair of one run shares: dialect, tables, the report, and the
    clock its writes are stamped on (the database's: ``server_clock.clock_of``)."""

    def __init__(
        self,
        ops: DialectOps,
        tables: dict[LegacySystemType, LegacyTable],
        report: RepairReport,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.ops = ops
        self.tables = tables
        self.report = report
        self.clock = clock

    def run(
        self,
        conn: sa.Connection,
        system: LegacySystemType,
        legacy_id: int | None,
        utx_id: str | None,
        *,
        lock: bool,
    ) -> None:
        """Repair one entity in ``conn``; ``lock`` takes the adapter's locks first.

        :class:`Relinked` (``lock``): the entity, named by its UTX id alone, was given its
        legacy row while this waited for its unified row; nothing was written, and the
        caller starts over (the legacy row is then locked first)."""
        report = self.report
        if lock:
            # Mode lock, then legacy row, then unified row: the adapter's order.
            self.ops.mode_shared_lock(conn, system)
        mode = read_mode(conn, system)
        lt = self.tables[system]
        assert lt.status is not None  # resolved with require_status: repair reads it
        entity = _read(conn, lt, legacy_id, utx_id, lock=lock)
        legacy, unified = entity.legacy, entity.unified
        if legacy is None and unified is None:
            report.not_found += 1
            if not report.dry_run:
                report.queue_resolved += resolve_queued(
                    conn, system, legacy_id, utx_id, "not found: neither side holds it"
                )
            return
        if unified is None and legacy is not None and not within_utx_range(int(legacy["id"])):
            # No UTX id holds it (domain.ids.require_migratable_id): left for an operator.
            reason = BEYOND_UTX_RANGE
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
            return
        compared = legacy  # newest_wins: a naive legacy time read as PostgreSQL reads it
        if report.strategy is Strategy.NEWEST_WINS and legacy is not None:
            at = as_database_reads(conn, legacy.get("updated_at"))  # (server_clock)
            compared = {**legacy, "updated_at": at}
        plan = plan_repair(system, compared, unified, report.strategy, mode)
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
        if report.authoritative_only and _overwrites_side_read(plan, mode):
            plan = RepairPlan(plan.kinds, "skip", skip_reason=SIDE_READ)
        if plan.action == "none":
            report.already_consistent += 1
            if not report.dry_run:
                report.queue_resolved += resolve_queued(
                    conn, system, legacy_id, utx_id, "already consistent"
                )
            return
        if plan.action == "skip":
            reason = plan.skip_reason or "skipped"
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
            self._keep(system, legacy_id, utx_id, plan, None)
            return
        op_id = str(uuid.uuid4())
        if not report.dry_run:
            if plan.action == "create_legacy":
                assert unified is not None
                refused = self._create_legacy(conn, system, unified, plan, mode, op_id)
                if refused is not None:
                    # Never counted as repaired: its queue rows stay open.
                    self.failed(f"{system.value}:{unified['id']}: {refused}")
                    return
            elif not self._write(conn, lt, legacy, unified, plan, mode, op_id):
                report.already_consistent += 1  # a concurrent insert won the race
                return
            report.queue_resolved += resolve_queued(
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

    def failed(self, message: str) -> None:
        """An entity could not be repaired (nothing of it written): counted, and said
        (the first KEEP_ACTIONS messages kept in the report)."""
        log.warning("repair failed: %s", message)
        self.report.failed += 1
        if len(self.report.errors) < KEEP_ACTIONS:
            self.report.errors.append(message)

    def _keep(
        self,
        system: LegacySystemType,
        legacy_id: int | None,
        utx_id: str | None,
        plan: RepairPlan,
        op_id: str | None,
    ) -> None:
        if OVERWRITING & set(plan.kinds) and plan.action in ("write_unified", "write_legacy"):
            self.report.overwrites.add((system.value, plan.action))
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
        now = self.clock()
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
            if not affected(conn, stmt):  # another writer inserted it first
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
            conn.execute(
                sa.update(U)
                .where(U.c.id == unified["id"])
                .values(**plan.unified_values, version=U.c.version + 1, updated_at=now)
            )
            after_legacy.update(plan.legacy_values)
            after_unified.update(plan.unified_values)
        self._audit(
            conn,
            system,
            utx_id,
            (legacy, after_legacy),
            (unified, after_unified),
            plan,
            mode,
            op_id,
            now,
        )
        if plan.action == "write_legacy":
            # Legacy last, after unified and the history: an application's trigger that
            # writes the row again is captured (a bypass write: capture_marked.py) after
            # what the repair wrote, and never overwritten by it.
            values = {lt.column(k).key: lt.as_stored(k, v) for k, v in plan.legacy_values.items()}
            values[lt.updated_at.key] = now
            conn.execute(sa.update(lt.table).where(lt.id == legacy["id"]).values(values))
            if "status" in plan.legacy_values:
                legacy_took(conn, lt, legacy["id"], plan.legacy_values["status"])
        return True

    def _create_legacy(
        self,
        conn: sa.Connection,
        system: LegacySystemType,
        unified: Mapping[str, Any],
        plan: RepairPlan,
        mode: DualWriteMode,
        op_id: str,
    ) -> str | None:
        """The legacy row of a transaction born without one (``missing_legacy``), made
        as the rollback's replay makes it (:func:`...replay_apply.create_legacy_rows`):
        the ``legacy_values`` its create kept, unified's current legacy status; linked
        and audited. None once made; else why not, and nothing was written (the
        database refused the row, or a value it requires was never kept).

        In a savepoint: any error of the database's is this entity's, rolled back, the
        run goes on (the replay's code takes some refusals for the statement's, e.g. a
        missing privilege, SQLSTATE 42501, which a row-level security policy or an
        application's trigger raises for some rows), except those the run's: a lost
        connection, a race worth a retry, the database refusing every write."""
        utx = str(unified["id"])
        # Its create's operation names the history row that kept the values (none
        # found: nothing was kept, and a table that requires some refuses it below).
        create = create_operations(conn, [utx]).get(utx, "")
        now = self.clock()
        try:
            with conn.begin_nested():
                made = create_legacy_rows(
                    conn, self.tables, {utx: create}, {utx: unified["legacy_status"]}, now
                )
                if utx in made.created:  # an application's BEFORE INSERT trigger may hold it
                    legacy_took(
                        conn, self.tables[system], made.created[utx], unified["legacy_status"]
                    )
        except LegacyHeld as held:
            return f"{held}: nothing written"
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or conn.invalidated or _the_runs(exc):
                raise
            if interrupt_behind(exc) is not None:
                raise  # Ctrl-C cut the savepoint short: the run's interruption
            return f"the legacy row was not created: {one_line(exc)}"
        if utx not in made.created:
            cause = made.refused.get(utx, "legacy row not created")
            said = made.said.get(utx)
            return f"the legacy row was not created ({cause})" + (f": {said}" if said else "")
        lid = made.created[utx]
        after_legacy = {name: unified[name] for name in DATA_COLUMNS}
        after_legacy.update(id=lid, status=unified["legacy_status"])
        after_unified = {**unified, "legacy_id": lid}
        self._audit(
            conn,
            system,
            utx,
            (None, after_legacy),
            (unified, after_unified),
            plan,
            mode,
            op_id,
            now,
        )
        return None

    def _audit(
        self,
        conn: sa.Connection,
        system: LegacySystemType,
        utx_id: str,
        legacy: tuple[Mapping[str, Any] | None, Mapping[str, Any]],
        unified: tuple[Mapping[str, Any] | None, Mapping[str, Any]],
        plan: RepairPlan,
        mode: DualWriteMode,
        op_id: str,
        now: Any,
    ) -> None:
        """The history row of one repair: ``legacy`` and ``unified`` as (before, after)
        (a side that did not exist before: None)."""
        (legacy_before, after_legacy), (unified_before, after_unified) = legacy, unified
        src = unified_before["status"] if unified_before else None
        dst = after_unified.get("status")
        conn.execute(
            sa.insert(status_history).values(
                history_values(
                    transaction_id=utx_id,
                    legacy_system=system.value,
                    legacy_id=after_legacy["id"],
                    from_status=src,
                    to_status=dst,
                    from_legacy_status=legacy_before["status"] if legacy_before else None,
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
                            "legacy": _jsonable(legacy_before, _L_AUDIT),
                            "unified": _jsonable(unified_before, _U_AUDIT),
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


def _read(
    conn: sa.Connection, lt: LegacyTable, legacy_id: int | None, utx_id: str | None, *, lock: bool
) -> Entity:
    """Both rows of the entity (``lock``: locked, legacy first). Named by its UTX id alone
    (a queue row of a transaction born without a legacy row), its unified row's legacy id
    is looked up first: a legacy row made and linked since (a repair, the rollback's
    replay) is read with it, never taken for missing (an orphan_unified)."""
    if legacy_id is None and utx_id is not None:
        linked = conn.execute(sa.select(U.c.legacy_id).where(U.c.id == utx_id)).scalar()
        if linked is not None:
            return read_entity(conn, lt, int(linked), None, lock=lock)
    entity = read_entity(conn, lt, legacy_id, utx_id, lock=lock)
    linked = entity.unified.get("legacy_id") if entity.unified is not None else None
    if entity.legacy_id is not None or linked is None:
        return entity
    # Linked by a writer that committed while this waited for the unified row.
    if lock:
        raise Relinked
    return Entity(lt.system, int(linked), read_legacy_row(conn, lt, int(linked)), entity.unified)


def _the_runs(exc: sa.exc.DBAPIError) -> bool:
    """A race worth a retry, or the database refusing every write (read-only, full,
    shutting down: :func:`...retry.fails_every_write`), but for a missing privilege
    (42501): that one is taken for the row's refusal, for a row-level security policy or
    an application's trigger raises it for the rows it refuses."""
    if is_retryable(exc):
        return True
    return fails_every_write(exc) and getattr(exc.orig, "sqlstate", None) != "42501"


def _is_override(system: LegacySystemType, src: str | None, dst: str | None) -> bool:
    """True when repair moved the unified status along a path the rules do not list."""
    if src is None or dst is None or src == dst:
        return False
    try:
        return dst not in {s.value for s in _rules.allowed(system.transaction_type, src)}
    except ValueError:
        return True


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


def _overwrites_side_read(plan: RepairPlan, mode: DualWriteMode) -> bool:
    """Whether ``plan`` overwrites a value on the side ``mode`` reads (unified's copy of
    the legacy status alone is no value either side reads: legacy_status_drift)."""
    if set(plan.kinds) <= {"legacy_status_drift"}:
        return False
    return (plan.action == "write_unified" and mode.reads_unified) or (
        plan.action == "write_legacy" and not mode.reads_unified
    )


class LegacyHeld(Exception):
    """A trigger of the application's stored another legacy status than the repair
    wrote: the entity's transaction is rolled back, the entity counted failed."""


def legacy_took(conn: sa.Connection, lt: LegacyTable, legacy_id: Any, sent: str | None) -> None:
    """LegacyHeld unless the legacy row holds ``sent`` after it was written, or what its
    unified row's copy says (a capture, where on, mirrored the application's trigger
    that wrote the row again): read back, not RETURNING, which does not show an AFTER
    trigger's write."""
    now = legacy_now(conn, lt, [legacy_id]).get(legacy_id)
    if now is None:
        raise LegacyHeld("a trigger of the application's deleted the legacy row written")
    stored, unified_copy = now
    if not followed(sent, stored, unified_copy):
        raise LegacyHeld(
            f"a trigger of the application's stored legacy status {stored!r}, not the "
            f"{sent!r} written"
        )


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
    try:
        clock = clock_of(engine)
        clock.measure(conn)
        EntityRepair(ops_for(engine), tables, report, clock.now).run(
            conn, system, legacy_id, utx_id, lock=True
        )
    except Relinked:
        raise StorageError(
            f"{utx_id}: its legacy row was made while the repair waited for it; run it again"
        ) from None
    except LegacyHeld as held:
        raise StorageError(f"{utx_id}: {held}") from None
    return report
