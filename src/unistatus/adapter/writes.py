"""The locked write path, and THE rows every writer builds.

- :func:`history_values`, :func:`unified_row` and :func:`legacy_row`: a history row, the
  unified row of a transaction and a new legacy row, column by column. Every writer
  builds them here: the adapter and repair with values, the prepared statements
  (:mod:`unistatus.adapter.sql`) and the backfill with SQL expressions in their place,
  so adding a column is one edit.
- :class:`LockedWriter`: one status change inside the caller's write transaction, the
  entity already locked (:mod:`unistatus.adapter.rows`): one guarded statement where the
  dialect allows, else each side the mode writes, the history row, and for
  ``primary_wins`` the secondary side in a savepoint, queued for repair if it fails
  (or, a legacy row its create never got, queued without a try).
- :func:`legacy_refused_meta`: the history metadata of a change whose legacy side was
  refused under ``primary_wins`` (flag ``legacy_refused``, under unistatus's reserved
  key: :mod:`unistatus.domain.marks`): the history row stands with the unified side,
  and must not read as if legacy took the change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import sqlalchemy as sa

from unistatus.adapter.held import held_status, hold_change
from unistatus.adapter.model import DualWriteResult, Entity, Fallback, ModeChanged, Plan
from unistatus.adapter.plan import in_step, one_statement
from unistatus.clock import utcnow
from unistatus.db.dialect import DialectOps
from unistatus.db.legacy import DATA_COLUMNS, LegacyTable, legacy_status_column
from unistatus.db.mode_reads import read_mode
from unistatus.db.prepared import Prepared
from unistatus.db.rowcount import affected
from unistatus.db.tables import (
    pending_legacy_changes,
    repair_queue,
    status_history,
    unified_transactions,
)
from unistatus.domain.ids import derive_utx_id
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.marks import FLAG_LEGACY_REFUSED, marked
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.domain.transitions import TransitionKind
from unistatus.errors import ModeError, StorageError

__all__ = [
    "FLAG_LEGACY_REFUSED",
    "HISTORY_KEYS",
    "LockedWriter",
    "Statements",
    "confirm_mode",
    "history_values",
    "legacy_refused_meta",
    "legacy_row",
    "one_statement_params",
    "plan_history",
    "result_of",
    "unified_row",
]

# The adapter's one logger: its messages kept their logger name through the split.
log = logging.getLogger("unistatus.adapter.core")
U = unified_transactions
# Why the legacy side of a change to a transaction born without a legacy row failed.
NO_LEGACY_ROW = "no legacy row to write (the legacy INSERT of its create was refused)"
# How a failed secondary side's error starts (the result's, the repair queue's).
SECONDARY_FAILED = "secondary write failed: "
# How much of legacy's error the history row keeps (its first line; all of it is in the
# repair queue and the log).
_LEGACY_ERROR_CHARS = 500

# --- the rows ---------------------------------------------------------------------------

# The columns of a history row, in the order every writer lists them: the table's own
# columns (by key), all but the id the database assigns.
HISTORY_KEYS = tuple(c.key for c in status_history.c if c.key != "id")
_HISTORY_SET = frozenset(HISTORY_KEYS)
_OMITTED: Any = object()


def history_values(**values: Any) -> dict[str, Any]:
    """One ``unified_status_history`` row: a value (or a SQL expression) for each column
    of HISTORY_KEYS, in that order. A missing or unknown column is a TypeError."""
    if values.keys() != _HISTORY_SET:
        wrong = sorted(_HISTORY_SET.symmetric_difference(values))
        raise TypeError(f"a history row needs exactly HISTORY_KEYS; wrong: {wrong}")
    return {k: values[k] for k in HISTORY_KEYS}


def plan_history(plan: Plan) -> dict[str, Any]:
    """The history row of a planned status change (or of a create, or a link)."""
    e = plan.entity
    return history_values(
        transaction_id=e.utx_id,
        legacy_system=e.system.value,
        legacy_id=e.legacy_id,
        from_status=plan.src.value if plan.src else None,
        to_status=plan.dst.value,
        from_legacy_status=plan.src_legacy,
        to_legacy_status=plan.dst_legacy,
        reason=plan.reason,
        triggered_by=plan.triggered_by,
        meta=plan.metadata,
        operation_id=plan.operation_id,
        mode=plan.mode.value,
        override=plan.kind is TransitionKind.OVERRIDE,
        created_at=plan.now,
    )


def legacy_refused_meta(meta: Mapping[str, Any] | None, error: str | None) -> dict[str, Any]:
    """A history row's metadata ``meta`` (the caller's, every key kept), marked under
    unistatus's own key (:func:`unistatus.domain.marks.marked`): the change's legacy side
    was refused with ``error`` (a result's, :data:`SECONDARY_FAILED` first) and the
    entity queued for repair. The row's ``to_legacy_status`` stays what the change asked
    legacy to hold (as the unified row's ``legacy_status`` does until the repair); this
    flag says legacy does not hold it (docs/adapter.md)."""
    first = (error or "").removeprefix(SECONDARY_FAILED).strip().split("\n", 1)[0]
    return marked(
        meta,
        flag=FLAG_LEGACY_REFUSED,
        legacy_error=first[:_LEGACY_ERROR_CHARS],
        repair_queued=True,
    )


def _as_is(value: Any) -> Any:
    return value


def unified_row(
    system: LegacySystemType,
    *,
    utx_id: Any,
    legacy_id: Any,
    data: Mapping[str, Any],
    status: Any,
    legacy_status: Any,
    origin: str,
    created_at: Any,
    updated_at: Any,
    meta: Any = _OMITTED,
    literal: Callable[[Any], Any] = _as_is,
) -> dict[str, Any]:
    """The unified row of a transaction of ``system``, column by column (key: value).

    ``data`` holds DATA_COLUMNS (a legacy row, a create's checked fields, or their SQL
    expressions). ``meta`` is left out unless given. A SQL caller passes expressions and
    ``literal=sa.literal``, and selects the values into ``[U.c[k] for k in row]``.
    """
    row: dict[str, Any] = {
        "id": utx_id,
        "transaction_type": literal(system.transaction_type.value),
        "legacy_system": literal(system.value),
        "legacy_id": legacy_id,
        **{name: data[name] for name in DATA_COLUMNS},
        "status": status,
        "legacy_status": legacy_status,
        "version": literal(1),
        "origin": literal(origin),
    }
    if meta is not _OMITTED:
        row["meta"] = meta
    row["created_at"] = created_at
    row["updated_at"] = updated_at
    return row


def legacy_row(
    lt: LegacyTable,
    *,
    data: Mapping[str, Any],
    status: Any,
    now: Any,
    extra: Mapping[str, Any] | None = None,
) -> dict[sa.Column[Any], Any]:
    """A new legacy row (column: value): DATA_COLUMNS from ``data``, created now, and
    the application's own columns from ``extra`` (checked ``legacy_values``, by name)."""
    row: dict[sa.Column[Any], Any] = {
        lt.column(name): lt.as_stored(name, data[name]) for name in DATA_COLUMNS
    }
    row[legacy_status_column(lt)] = lt.as_stored("status", status)
    row[lt.created_at] = now
    row[lt.updated_at] = now
    for name, value in (extra or {}).items():
        row[lt.table.c[name]] = value
    return row


def result_of(plan: Plan) -> DualWriteResult:
    """The result of a planned change that succeeded (the caller marks what did not)."""
    e = plan.entity
    return DualWriteResult(
        operation_id=plan.operation_id,
        entity_id=e.utx_id,
        legacy_entity_id=e.legacy_id,
        legacy_system=e.system,
        mode=plan.mode,
        primary_success=True,
        secondary_success=True,
        overall_success=True,
        status=plan.dst,
        legacy_status=plan.dst_legacy,
    )


def one_statement_params(plan: Plan) -> dict[str, Any]:
    """What a one-statement write binds: the legacy side, and the unified side and
    history row when the mode writes unified."""
    e = plan.entity
    params: dict[str, Any] = {
        "p_legacy_id": e.legacy_id,
        "p_mode": plan.mode.value,
        "p_legacy_status": plan.dst_legacy,
        "p_now": plan.now,
    }
    if plan.mode.writes_unified:
        assert e.unified is not None
        params["p_utx_id"] = e.unified["id"]
        params["p_status"] = plan.dst.value
        for k, v in plan_history(plan).items():
            params[f"h_{k}"] = v
    return params


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def confirm_mode(conn: sa.Connection, mode: DualWriteMode, system: LegacySystemType) -> None:
    """Re-read ``system``'s mode with its mode lock held; a switch in between means retry."""
    if read_mode(conn, system) is not mode:
        raise ModeChanged


# --- the locked path --------------------------------------------------------------------


class Statements(Protocol):
    """What the locked path needs of :class:`unistatus.adapter.sql.HotStatements`."""

    @property
    def legacy(self) -> Mapping[LegacySystemType, LegacyTable]: ...

    def legacy_write(self, system: LegacySystemType) -> Prepared: ...

    def dual_write(self, system: LegacySystemType) -> Prepared: ...


class LockedWriter:
    """Writes a planned change in the caller's transaction, the entity locked."""

    def __init__(
        self,
        statements: Statements,
        ops: DialectOps,
        fallback: Fallback,
        mapper: LegacyStatusMapper,
    ) -> None:
        self.hot = statements
        self.ops = ops
        self.fallback: Fallback = fallback
        self.mapper = mapper

    def apply(self, conn: sa.Connection, plan: Plan) -> DualWriteResult:
        e, mode = plan.entity, plan.mode
        result = result_of(plan)
        if plan.kind is TransitionKind.NOOP and in_step(plan):
            confirm_mode(conn, mode, e.system)
            result.changed = False
            return result
        if one_statement(plan, self.ops.supports_dml_cte, self.fallback):
            return self._held(conn, plan, result, self._write_one_statement(conn, plan))
        confirm_mode(conn, mode, e.system)
        # No legacy row to write where legacy is the secondary side: refused as a
        # database refusal of it would be (queued below), not before the write.
        no_legacy_row = self._legacy_row_refused(plan)
        if mode.writes_legacy and not no_legacy_row:
            # Refuse before the first write, not between the sides: a caller's
            # transaction (``connection=``) must never be left half-written by a refusal.
            self._legacy_writable(plan)
        stored: list[str | None] = []
        legacy_side = (
            (lambda: stored.append(self._write_legacy_status(conn, plan)))
            if mode.writes_legacy and not no_legacy_row
            else None
        )
        unified_side = (
            (lambda: self._write_unified_side(conn, plan)) if mode.writes_unified else None
        )
        # PostgreSQL: unified before legacy, whichever is primary (the rows are locked
        # already): an application's trigger that the legacy write fires and that writes
        # the row again is captured as a bypass write (migration/capture_marked.py), after
        # the unified write it must follow, never overwritten by it. SQLite captures no
        # nested statement: the primary side first, so a refused primary leaves nothing
        # written for a caller's transaction that commits after the error all the same.
        sides = [(unified_side, mode.reads_unified), (legacy_side, not mode.reads_unified)]
        if self.ops.name != "postgresql":
            sides.sort(key=lambda side: not side[1])
        for write, primary in sides:
            if write is None:
                continue
            if primary:
                write()
            else:
                self.secondary(conn, write, result, e)
        if no_legacy_row:
            self.queue(conn, result, e, SECONDARY_FAILED + NO_LEGACY_ROW)
        if result.has_inconsistency and mode.reads_unified:
            # Legacy, the secondary side, refused: the history row committed with the
            # unified side says so (a refused unified side, legacy primary, took its
            # history row with it). In this transaction, which queues the repair.
            self._mark_legacy_refused(conn, plan, result.error)
        if mode is DualWriteMode.UNIFIED_ONLY:
            self.pending(conn, e.utx_id, "status", plan.dst_legacy, plan.operation_id, plan.now)
        if not stored:
            return result
        if result.has_inconsistency:
            # The unified side refused and queued (legacy primary): nothing of it to
            # rewrite, the repair brings it in step; the result says what legacy stored.
            sent = (plan.dst, plan.dst_legacy)
            result.status, result.legacy_status = held_status(
                self.mapper, e.system, sent, stored[0]
            )
            return result
        return self._held(conn, plan, result, stored[0])

    def _held(
        self, conn: sa.Connection, plan: Plan, result: DualWriteResult, stored: str | None
    ) -> DualWriteResult:
        """``result``, once what was written holds the status legacy ``stored``
        (:func:`~unistatus.adapter.held.hold_change`)."""
        hold_change(conn, self.mapper, plan, stored, self.hot.legacy[plan.entity.system])
        result.status, result.legacy_status = plan.dst, plan.dst_legacy
        return result

    def _write_one_statement(self, conn: sa.Connection, plan: Plan) -> str | None:
        """Legacy UPDATE (+ unified UPDATE + history INSERT) in one round trip.

        The statement carries the mode check (instead of a separate read): its snapshot
        is taken after the mode lock was granted, so it sees any switch that committed
        before; if the mode moved, nothing matches, nothing is written, and the write is
        retried under the new mode. The status legacy stored.
        """
        e = plan.entity
        params = one_statement_params(plan)
        if not plan.mode.writes_unified:
            rows = self.hot.legacy_write(e.system).rows(conn, params)
            if not rows:
                raise ModeChanged
            return _text(rows[0][1])
        written, stored = self.hot.dual_write(e.system).rows(conn, params)[0]
        if written != 1:
            raise ModeChanged
        return _text(stored)

    def secondary(
        self, conn: sa.Connection, write: Callable[[], None], result: DualWriteResult, e: Entity
    ) -> None:
        """The secondary side: as it is under ``strict``; under ``primary_wins`` in a
        savepoint, and queued for repair (the result says so) if the database refuses it."""
        if self.fallback == "strict":
            write()
            return
        try:
            with conn.begin_nested():
                write()
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or conn.invalidated:
                # The connection is gone, not the secondary side: the whole write
                # rolled back, and is retried (or reported) as a lost connection.
                raise
            self.queue(conn, result, e, f"{SECONDARY_FAILED}{type(exc.orig).__name__}: {exc.orig}")

    @staticmethod
    def queue(conn: sa.Connection, result: DualWriteResult, e: Entity, error: str) -> None:
        """The secondary side failed with ``error``: the result says so and the entity is
        queued for repair (``primary_wins``; the primary side stands)."""
        # Queued with the write: a caller that rolls its transaction back queues nothing.
        log.warning(
            "%s (%s); queued for repair if its transaction commits", error, result.entity_id
        )
        result.secondary_success = False
        result.has_inconsistency = True
        result.error = error
        conn.execute(
            sa.insert(repair_queue).values(
                transaction_id=result.entity_id,
                legacy_system=e.system.value,
                legacy_id=e.legacy_id,
                operation_id=result.operation_id,
                source="dual_write",
                error=error[:2000],
                created_at=utcnow(),
            )
        )

    def _legacy_row_refused(self, plan: Plan) -> bool:
        """Whether this change's legacy side is refused before it is tried: under
        ``primary_wins`` in DUAL_WRITE_UNIFIED_PRIMARY, a transaction born without a
        legacy row (its create's legacy INSERT refused, and acknowledged). Legacy is the
        secondary side there: the change is queued as a refused legacy UPDATE is, and
        the rollback's replay (or ``unistatus repair``) creates the row with the newest
        status. Elsewhere a missing legacy row stays a ModeError (``_legacy_writable``):
        where legacy is primary, under ``strict``, a row deleted behind the adapter. The
        locked unified row must name no legacy row either (one created and linked since
        the legacy id was looked up is written: :class:`...model.Relinked`)."""
        e = plan.entity
        return (
            plan.mode is DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY
            and self.fallback == "primary_wins"
            and e.legacy is None
            and e.legacy_id is None
            and e.unified is not None
            and e.unified.get("legacy_id") is None
        )

    def _legacy_writable(self, plan: Plan) -> None:
        """ModeError unless the entity has a legacy row with a status column."""
        e = plan.entity
        if e.legacy is None:
            raise ModeError(
                f"{e.utx_id} has no legacy row; replay pending changes before writing legacy"
            )
        legacy_status_column(self.hot.legacy[e.system])

    def _write_legacy_status(self, conn: sa.Connection, plan: Plan) -> str | None:
        """The legacy row's status change; the status it stored."""
        e = plan.entity
        lt = self.hot.legacy[e.system]
        write = (
            sa.update(lt.table)
            .where(lt.id == e.legacy_id)
            .values(
                {
                    legacy_status_column(lt).key: lt.as_stored("status", plan.dst_legacy),
                    lt.updated_at.key: plan.now,
                }
            )
        )
        if not conn.dialect.update_returning:  # it cannot tell: as sent
            conn.execute(write)
            return None
        return conn.execute(write.returning(lt.read("status"))).scalar()

    def _write_unified_side(self, conn: sa.Connection, plan: Plan) -> None:
        """The unified row and the history row recording its change: one side, so a
        secondary unified side refused under ``primary_wins`` leaves neither behind."""
        self._write_unified_status(conn, plan)
        self.history(conn, plan)

    def _write_unified_status(self, conn: sa.Connection, plan: Plan) -> None:
        e = plan.entity
        if e.unified is not None:
            conn.execute(
                sa.update(U)
                .where(U.c.id == e.unified["id"])
                .values(
                    status=plan.dst.value,
                    legacy_status=plan.dst_legacy,
                    version=U.c.version + 1,
                    updated_at=plan.now,
                )
            )
            return
        # Not backfilled yet: create the unified row from the locked legacy row, so a
        # later backfill (ON CONFLICT DO NOTHING) can never overwrite this newer status.
        assert e.legacy is not None
        self.upsert_from_legacy(conn, e, plan.dst.value, plan.dst_legacy, plan.now)

    def upsert_from_legacy(
        self,
        conn: sa.Connection,
        e: Entity,
        status: str,
        legacy_status: str,
        now: Any,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """The unified row of the locked legacy row, or its status if one appeared
        (the backfill's or the capture's insert racing this one)."""
        assert e.legacy is not None and e.legacy_id is not None
        values = unified_row(
            e.system,
            utx_id=derive_utx_id(e.system, e.legacy_id),
            legacy_id=e.legacy_id,
            data=e.legacy,
            status=status,
            legacy_status=legacy_status,
            origin="dual_write",
            meta=metadata,
            created_at=e.legacy["created_at"] or now,
            updated_at=now,
        )
        # Every unique index an arbiter: a racing insert of the same row (the backfill's,
        # the capture's) is a conflict wherever this insert meets it, and the row it
        # committed gets the change. (Arbitrated on one index, the insert could meet it
        # in the other after its conflict check had passed: a unique violation.) DO
        # NOTHING waits for the racing insert to end, so the UPDATE (a new snapshot in
        # READ COMMITTED) sees its row.
        if affected(conn, self.ops.insert(U).values(values).on_conflict_do_nothing()):
            return
        updated = affected(
            conn,
            sa.update(U)
            .where(U.c.legacy_system == e.system.value, U.c.legacy_id == e.legacy_id)
            .values(
                status=status, legacy_status=legacy_status, version=U.c.version + 1, updated_at=now
            ),
        )
        if updated != 1:
            # REPEATABLE READ or SERIALIZABLE (a caller's transaction): the row committed
            # after this transaction's snapshot, which cannot see it to change it.
            raise StorageError(
                f"the unified row of {e.system.value.lower()}:{e.legacy_id} was created by "
                "another writer after this transaction began; run the transaction again"
            )

    @staticmethod
    def history(conn: sa.Connection, plan: Plan) -> None:
        conn.execute(sa.insert(status_history).values(plan_history(plan)))

    @staticmethod
    def _mark_legacy_refused(conn: sa.Connection, plan: Plan, error: str | None) -> None:
        """Flag the history row ``plan`` wrote (its transaction and operation name it):
        its legacy side was refused (:func:`legacy_refused_meta`). A statement of the
        refused path only; a change legacy takes is written as it always was."""
        h = status_history
        conn.execute(
            sa.update(h)
            .where(h.c.transaction_id == plan.entity.utx_id, h.c.operation_id == plan.operation_id)
            .values(meta=legacy_refused_meta(plan.metadata, error))
        )

    @staticmethod
    def pending(
        conn: sa.Connection,
        utx_id: str,
        kind: str,
        legacy_status: str | None,
        op_id: str,
        now: Any,
    ) -> None:
        """A change legacy must get at the rollback's replay (UNIFIED_ONLY)."""
        conn.execute(
            sa.insert(pending_legacy_changes).values(
                transaction_id=utx_id,
                kind=kind,
                legacy_status=legacy_status,
                operation_id=op_id,
                created_at=now,
            )
        )
