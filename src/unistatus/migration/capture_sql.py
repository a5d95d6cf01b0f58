"""The SQL of the capture triggers, generated from the mapping, the rules and the tables.

Every statement here works on a set of legacy rows, :class:`Rows` (a FROM clause whose
columns carry unistatus's names: ``id``, ``status``, ``user_id``, ...), whatever they are:
a PostgreSQL transition table (``REFERENCING NEW TABLE``, one statement for a whole bulk
write), the ``NEW`` or ``OLD`` row of a SQLite row trigger, or the legacy rows logged while
LEGACY_ONLY (the catch-up). So the rule that brings unified in step is written once:

- the unified status is the forward mapping of the legacy status
  (:func:`~unistatus.domain.mapping.forward_case`), unless the current one is compatible
  with it (a refinement such as RELEASE_PENDING for ACTIVE is kept, as the adapter keeps it);
- the row is *stale* when its status, its ``legacy_status`` image or a shared field
  differs (the consistency rule); only stale rows are written, each with one history row
  and ``version + 1``, exactly as the adapter would (:func:`unified_row`,
  :func:`history_values`);
- an UPDATE's rows (:meth:`Rows.changed_from`) are judged by the kept columns the
  statement changed in each (a row with an open quarantine entry: all of them, see
  :mod:`~unistatus.migration.capture_quarantined`), unified's values standing for the
  others: a shared field written alone keeps unified's status (and, UNIFIED_ONLY, the changes awaiting replay);
  UNIFIED_ONLY, a status changed is written and recorded for the replay even where
  unified already holds it (legacy holds a newer value than any change awaiting replay);
- a change the transition rules would refuse is applied anyway (legacy is
  authoritative) and flagged (``override`` and the history's metadata); an unmappable
  value leaves unified alone and goes to the quarantine with the writer's name.

:class:`Context` carries what differs per place: the writer's name, the mode, the time,
as SQL expressions (PL/pgSQL variables, or SQLite subqueries). The DDL around these
statements: :mod:`unistatus.migration.capture_ddl`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from unistatus.adapter.writes import history_values, unified_row
from unistatus.backfill.statements import (
    QUARANTINE_COLUMNS,
    copied_fields,
    migratable,
    quarantined_raw,
    shared_fields,
    unmappable_reason,
)
from unistatus.db import mode_reads
from unistatus.db.cte_names import cte_name
from unistatus.db.dialect import DialectOps
from unistatus.db.infinite_times import finite_time
from unistatus.db.legacy import DATA_COLUMNS, LEGACY_COLUMNS, LegacyTable
from unistatus.db.tables import (
    pending_legacy_changes,
    status_history,
    unified_transactions,
)
from unistatus.db.tables_backfill import backfill_quarantine
from unistatus.db.tables_capture import capture_changed, capture_writers
from unistatus.domain.ids import utx_id_sql
from unistatus.domain.mapping import compatible_clause
from unistatus.domain.statuses import LegacySystemType
from unistatus.domain.transitions import allowed_clause
from unistatus.migration.capture_context import (
    UNIFIED_TARGET,
    Context,
    count_foreign_unified,
    count_writes,
)
from unistatus.migration.capture_quarantined import resolve_migrated, whole_when_quarantined
from unistatus.migration.capture_rows import Rows, allowed_in_two_steps, changed_flag

__all__ = [
    "FLAG_DELETED",
    "FLAG_FROZEN",
    "FLAG_REFUSED",
    "UNIFIED_TARGET",
    "Context",
    "Rows",
    "SystemSql",
    "count_foreign_unified",
    "stored_mode",
]

U = unified_transactions
H = status_history
Q = backfill_quarantine
W = capture_writers
P = pending_legacy_changes

# What a captured change is flagged with (history metadata ``flag``, writer counts).
FLAG_REFUSED = "transition_refused"  # the transition rules would have refused it
FLAG_FROZEN = "legacy_frozen"  # written to the frozen legacy table (UNIFIED_ONLY)
FLAG_DELETED = "legacy_row_deleted"  # the legacy row is gone; its unified row is kept


def stored_mode(system: LegacySystemType | sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """``system``'s stored mode as SQL (:func:`unistatus.db.mode_reads.stored_mode`)."""
    return sa.type_coerce(mode_reads.stored_mode(system), sa.String)


@dataclass(frozen=True)
class _Judged:
    """The legacy rows that have a unified row, each with the rule's verdict, worked out
    once per row (PostgreSQL: a materialized CTE shared by every write that reads it, so
    the planner neither copies the mapping's CASE into each use nor joins the rows again
    per write).

    ``j`` has the legacy row's columns, ``mapped`` (its forward mapping), the unified
    row's ``uid``, ``u_status``, ``u_legacy_status`` and ``new_status``, the status the
    unified row gets (its own when compatible with the legacy value, a refinement the
    adapter keeps too; else the mapped one). An UPDATE's rows (:attr:`Rows.flagged`)
    carry legacy's value only in the kept columns the statement changed, unified's in
    the others (a status it did not change keeps unified's status and image), and
    ``took_status``.
    """

    j: Any
    stale: sa.ColumnElement[bool]  # the legacy value maps, and the unified row disagrees
    refused: sa.ColumnElement[bool]  # the rules would refuse u_status -> new_status
    # An UPDATE's rows: whether it changed the row's status (None: rows taken whole).
    took_status: sa.ColumnElement[bool] | None = None

    def frozen_status(self, ctx: Context) -> sa.ColumnElement[bool]:
        """UNIFIED_ONLY, a mappable status written to frozen legacy: an UPDATE's row whose
        status it changed (a row taken whole: when stale). Legacy now holds a newer value
        than any change awaiting replay, even one unified already holds."""
        if self.took_status is None:
            return sa.and_(ctx.is_frozen, self.stale)
        return sa.and_(ctx.is_frozen, self.j.mapped.is_not(None), self.took_status)

    def written(self, ctx: Context) -> sa.ColumnElement[bool]:
        """The rows written (history, unified row): the stale ones, and every status
        written to frozen legacy (the newest write, recorded where unified agrees too)."""
        if ctx.frozen is False or self.took_status is None:
            return self.stale
        return sa.or_(self.stale, self.frozen_status(ctx))


class SystemSql:
    """The capture statements of one legacy system, on its resolved table."""

    def __init__(self, lt: LegacyTable, ops: DialectOps) -> None:
        self.lt = lt
        self.system: LegacySystemType = lt.system
        # The dialect's INSERT that knows ON CONFLICT.
        self.insert = ops.insert
        # PostgreSQL would copy a subquery's expressions into every use of them: OFFSET 0
        # keeps them computed once per row (SQLite's per-row triggers need no fence).
        self.fenced = ops.name == "postgresql"

    def _fence(self, select: sa.Select[Any]) -> sa.Select[Any]:
        return select.offset(0) if self.fenced else select

    # --- the rule, written once -----------------------------------------------------

    def _unified_of(self, legacy_id: Any) -> sa.ColumnElement[bool]:
        return sa.and_(U.c.legacy_system == self.system.value, U.c.legacy_id == legacy_id)

    def _mapped(self, r: Rows) -> Any:
        """``r`` with the forward mapping of each row as ``mapped`` (NULL: unmappable)."""
        mapped = migratable(self.system, r.c.status, r.c.id, shared_fields(r.c)).label("mapped")
        return self._fence(sa.select(*r.c, mapped)).subquery("capture_mapped").c

    def _judged(self, r: Rows, ctx: Context, *, lock: bool) -> _Judged:
        """``lock`` (PostgreSQL): the unified rows are locked by the judging select
        itself (``FOR UPDATE OF``): in READ COMMITTED it waits for a concurrent writer of
        a row and then judges the row's newest version, which the writes of the same
        statement then change (one join and one statement fewer than locking first)."""
        # A row with an open quarantine entry is taken whole (capture_quarantined).
        whole = whole_when_quarantined(r, self.system, ctx.reads_legacy, fenced=self.fenced)
        m = self._mapped(whole)

        def agrees(name: str, clause: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
            # A column an UPDATE did not change agrees: unified's value stays.
            return sa.or_(sa.not_(m[changed_flag(name)]), clause) if r.flagged else clause

        compatible = compatible_clause(self.system, m.status, U.c.status)
        copied = copied_fields(self.lt, shared_fields(m))  # judged as read, copied so
        in_step = sa.and_(
            agrees("status", sa.and_(compatible, U.c.legacy_status.is_not_distinct_from(m.status))),
            *(agrees(n, U.c[n].is_not_distinct_from(copied[n])) for n in DATA_COLUMNS),
        )
        new_status = sa.case((agrees("status", compatible), U.c.status), else_=m.mapped)
        allowed = allowed_clause(self.system.transaction_type, U.c.status, new_status)
        if r.flagged:  # legacy moved on in two steps, the first not captured yet
            allowed = sa.or_(allowed, allowed_in_two_steps(self.system, m, new_status))
        legacy = [
            m[name] if copied.get(name, m[name]) is m[name] else copied[name].label(name)
            for name in LEGACY_COLUMNS
        ]
        if r.flagged:
            # Legacy's value where the UPDATE changed it, else unified's image of it; and
            # whether the status was changed (only then is it recorded for the replay).
            image = {"status": U.c.legacy_status, **{n: U.c[n] for n in DATA_COLUMNS}}
            legacy = [
                sa.case((m[changed_flag(c.name)], c), else_=image[c.name]).label(c.name)
                if c.name in image
                else c
                for c in legacy
            ]
            legacy.append(m[changed_flag("status")].label("took_status"))
        select = sa.select(
            *legacy,
            m.mapped,
            U.c.id.label("uid"),
            U.c.status.label("u_status"),
            U.c.legacy_status.label("u_legacy_status"),
            new_status.label("new_status"),
            sa.func.coalesce(in_step, sa.false()).label("in_step"),
            # Worked out once per row: the count, the flag and the override read it.
            sa.func.coalesce(sa.not_(allowed), sa.false()).label("refused"),
        ).join_from(m.id.table, U, self._unified_of(m.id))
        if lock:
            select = select.with_for_update(of=U)
        # PostgreSQL: judged once, in a materialized CTE the writes then share
        # (:meth:`_one_statement`); SQLite's per-row triggers read it per statement.
        j = (
            select.cte(cte_name("capture_judged")).prefix_with("MATERIALIZED")
            if self.fenced
            else select.subquery("capture_judged")
        ).c
        return _Judged(
            j=j,
            stale=sa.and_(j.mapped.is_not(None), sa.not_(j.in_step)),
            refused=j.refused,
            took_status=j.took_status if r.flagged else None,
        )

    @staticmethod
    def base_meta(ctx: Context, flag: sa.ColumnElement[Any] | None = None) -> Any:
        """The history metadata of a captured change (``flag``: None when not flagged)."""
        flag = sa.null() if flag is None else flag
        return ctx.json(
            "capture", ctx.kind, "writer", ctx.writer, "client_addr", ctx.client_addr, "flag", flag
        )

    def _meta(self, ctx: Context, flag: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        if ctx.meta is None:
            return self.base_meta(ctx, flag)  # type: ignore[no-any-return]
        # The statement's metadata, and the flag set on the (few) flagged rows only: one
        # JSON object built per statement, not per row (a bulk write's history).
        flagged = ctx.meta.op("||")(ctx.json("flag", flag))
        return sa.case((flag.is_(None), ctx.meta), else_=flagged)

    # --- inserted or updated legacy rows ----------------------------------------------

    def bring_in_step(
        self, r: Rows, ctx: Context, *, lock: bool, bypass: bool
    ) -> list[sa.Executable]:
        """The statements that bring the unified rows of ``r`` in step, in order.

        ``lock`` (PostgreSQL: other writers run at once): a missing unified row is created
        by one statement that writes history only for the rows it really created; then,
        in the next statement (a newer snapshot), the unified rows of ``r`` (one a
        concurrent backfill created meanwhile included) are locked as they are judged
        (the writer holds their legacy rows: the adapter's lock order), so the history
        written reads what the update then changes. ``bypass``: a writer's own statement
        (counted, missing unified rows created, UNIFIED_ONLY changes recorded for the
        replay); else the catch-up after LEGACY_ONLY.

        PostgreSQL gets two statements: the quarantine and the missing rows, then the
        judged writes (each statement a trigger runs costs its executor start-up, which
        for one row is most of the price); :meth:`in_step_parts` gives them apart.
        """
        prepare, writes = self.in_step_parts(r, ctx, lock=lock, bypass=bypass)
        return prepare + writes

    def in_step_parts(
        self, r: Rows, ctx: Context, *, lock: bool, bypass: bool
    ) -> tuple[list[sa.Executable], list[sa.Executable]]:
        """:meth:`bring_in_step` in two parts: the quarantine and the missing unified rows
        (nothing to do when :meth:`needs_preparing` is false), then the judged writes."""
        prepare: list[Any] = [self._quarantine(r, ctx)]
        if bypass:
            prepare += self._create_missing(r, ctx, concurrent=lock)
        judged = self._judged(r, ctx, lock=lock)
        writes: list[Any] = []
        if bypass:
            writes.append(self._count(r, judged, ctx))
            writes += self._frozen_changes(judged, ctx)
        writes += self._update_stale(judged, ctx)
        # Resolved after the judging, which takes a row with an open entry whole.
        writes.append(resolve_migrated(self.system, judged.j.id, judged.j.mapped, ctx))
        if not self.fenced:
            return prepare, writes
        return self._one_statement(prepare, "capture_prepare"), self._one_statement(writes)

    def needs_preparing(self, r: Rows) -> sa.ColumnElement[bool]:
        """Whether the first part of :meth:`in_step_parts` has anything to do for ``r``:
        a row with an unmappable value, without a unified row, or with an open quarantine
        entry. A read with no write in its plan, so a statement whose rows all have their
        unified row (most bypass UPDATEs) skips the part's four writes and their start-up;
        it reads what the part would, in a snapshot as old as the part's would be.

        PostgreSQL: a statement of one row (or none) is read with each probe fenced
        (OFFSET 0): one index probe. Unfenced, the planner may turn an ``EXISTS`` under
        ``OR`` into a hashed subplan that reads every unified row of the system to probe
        one (it did, with the unified table not yet analyzed; and the plan of this read,
        which has no parameters, is made on the session's first statement and kept, so
        a first bulk statement would leave it to every later one-row statement). A
        larger statement is read unfenced, as before (hashing pays there). Each read is
        an InitPlan of the one statement, run only when the ``CASE`` takes its branch.
        """
        if not self.fenced:
            return self._needs_preparing(r, fence=False)
        rows = sa.select(sa.func.count()).select_from(r.rows).scalar_subquery()
        return sa.case(
            (rows <= 1, self._needs_preparing(r, fence=True)),
            else_=self._needs_preparing(r, fence=False),
        )

    def _needs_preparing(self, r: Rows, *, fence: bool) -> sa.Exists:
        def probe(select: sa.Select[Any]) -> sa.Exists:
            return sa.exists(select.offset(0) if fence else select)

        mapped = migratable(self.system, r.c.status, r.c.id, shared_fields(r.c))
        has_unified = probe(sa.select(U.c.id).where(self._unified_of(r.c.id)))
        quarantined = probe(
            sa.select(Q.c.legacy_id).where(
                Q.c.system == self.system.value,
                Q.c.legacy_id == r.c.id,
                Q.c.resolved_at.is_(None),
            )
        )
        return sa.exists(
            sa.select(r.c.id).where(sa.or_(mapped.is_(None), ~has_unified, quarantined))
        )

    @staticmethod
    def _one_statement(writes: list[Any], name: str = "capture_write") -> list[sa.Executable]:
        """PostgreSQL: writes as one statement (all but the last as data-modifying CTEs):
        the judged rows are joined and judged once, not once per write. They touch
        different rows or tables (the quarantine's entries, the unified rows, the history),
        and the judged writes all read the unified rows as locked by the judging (and the
        quarantine entries as it read them), so one snapshot serves them all."""
        *before, last = writes
        for i, write in enumerate(before):
            last = last.add_cte(write.cte(cte_name(f"{name}_{i}")))
        return [last]

    def _quarantine(self, r: Rows, ctx: Context) -> sa.Executable:
        """Unmappable values aside (raw value, why, who). Entries mappable now are
        resolved after the judging (:func:`resolve_migrated`)."""
        m = self._mapped(r)
        select = sa.select(
            sa.literal(self.system.value, sa.String),
            m.id,
            quarantined_raw(m.status),
            unmappable_reason(self.system, m.status, m.id, shared_fields(m)),
            ctx.now,
            ctx.now,
            ctx.writer,
        ).where(m.mapped.is_(None))
        # The backfill's quarantine row, and who wrote the value.
        stmt = self.insert(Q).from_select([*QUARANTINE_COLUMNS, Q.c.writer], select)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Q.c.system, Q.c.legacy_id],
            set_={
                "raw_status": stmt.excluded.raw_status,
                "reason": stmt.excluded.reason,
                "last_seen_at": stmt.excluded.last_seen_at,
                "writer": stmt.excluded.writer,
                "resolved_at": None,
                "resolution": None,
            },
        )
        quarantined: sa.Executable = stmt
        return quarantined

    def _count(self, r: Rows, judged: _Judged, ctx: Context) -> sa.Executable:
        """One more statement of this writer: rows written, flagged, unmappable."""
        j, m = judged.j, self._mapped(r)
        writes = sa.select(sa.func.count()).select_from(r.rows).scalar_subquery()
        refused = (
            sa.select(sa.func.count())
            .select_from(j.uid.table)
            .where(judged.stale, judged.refused)
            .scalar_subquery()
        )
        unmappable = (
            sa.select(sa.func.count())
            .select_from(m.id.table)
            .where(m.mapped.is_(None))
            .scalar_subquery()
        )
        counts = sa.select(
            writes.label("writes"),
            sa.case((ctx.is_frozen, writes), else_=refused).label("flagged"),
            unmappable.label("unmappable"),
        ).subquery("counts")
        return count_writes(self.insert, self.system.value, counts, ctx)

    def _frozen_changes(self, judged: _Judged, ctx: Context) -> list[sa.Executable]:
        """UNIFIED_ONLY, a status written (:meth:`_Judged.frozen_status`): legacy now
        holds a newer value than any change awaiting replay (those are superseded, so the
        replay will not overwrite it, nor find legacy moved on), and the change is
        recorded as already in legacy. A shared field changed alone is in legacy already
        and is no status: the changes awaiting replay stay."""
        if ctx.frozen is False:
            return []
        j = judged.j
        frozen = judged.frozen_status(ctx)
        superseded = (
            sa.update(P)
            .where(
                P.c.replayed_at.is_(None),
                P.c.transaction_id.in_(sa.select(j.uid).where(frozen).scalar_subquery()),
            )
            .values(replayed_at=ctx.now)
        )
        recorded = sa.insert(P).from_select(
            [
                P.c.transaction_id,
                P.c.kind,
                P.c.legacy_status,
                P.c.operation_id,
                P.c.created_at,
                P.c.replayed_at,
            ],
            sa.select(
                j.uid, sa.literal("status", sa.String), j.status, ctx.uuid(), ctx.now, ctx.now
            ).where(frozen),
        )
        return [superseded, recorded]

    def _update_stale(self, judged: _Judged, ctx: Context) -> list[sa.Executable]:
        """History of each row written (from its unified values as they are), then the
        unified row itself."""
        j, written = judged.j, judged.written(ctx)
        flag = sa.case(
            (judged.refused, FLAG_REFUSED), (ctx.is_frozen, FLAG_FROZEN), else_=sa.null()
        )
        history = history_values(
            transaction_id=j.uid,
            legacy_system=sa.literal(self.system.value, sa.String),
            legacy_id=j.id,
            from_status=j.u_status,
            to_status=j.new_status,
            from_legacy_status=j.u_legacy_status,
            to_legacy_status=j.status,
            reason=ctx.reason,
            triggered_by=ctx.writer,
            meta=self._meta(ctx, flag),
            operation_id=ctx.uuid(),
            mode=ctx.mode,
            override=judged.refused,
            created_at=ctx.now,
        )
        write_history = sa.insert(H).from_select(
            [H.c[k] for k in history], sa.select(*history.values()).where(written)
        )
        update = (
            sa.update(U)
            .where(U.c.id == j.uid, written)
            .values(
                {
                    U.c.status: j.new_status,
                    U.c.legacy_status: j.status,
                    **{U.c[name]: j[name] for name in DATA_COLUMNS},
                    U.c.version: U.c.version + 1,
                    U.c.updated_at: ctx.now,
                }
            )
        )
        return [write_history, update]

    def _create_missing(self, r: Rows, ctx: Context, *, concurrent: bool) -> list[sa.Executable]:
        """A legacy row without a unified row: the row, and its history row.

        ``concurrent``: one statement, the history written from what the INSERT returns,
        so a row a concurrent writer (the backfill) created first gets none here (it is
        stale, and brought in step next, with its one history row). Every unique index
        is an arbiter: arbitrated on one, the insert could meet a racing insert of the
        same row in the other after its conflict check had passed (a unique violation
        that refused the writer's statement), not a conflict.
        """
        m = self._mapped(r)
        missing = sa.and_(
            m.mapped.is_not(None), ~sa.exists(sa.select(U.c.id).where(self._unified_of(m.id)))
        )
        utx_id = utx_id_sql(self.system, m.id)
        row = unified_row(
            self.system,
            utx_id=utx_id,
            legacy_id=m.id,
            data=copied_fields(self.lt, shared_fields(m)),
            status=m.mapped,
            legacy_status=m.status,
            origin="dual_write",
            # A missing or infinite time (infinite_times.finite_time): the other, or now.
            created_at=sa.func.coalesce(
                finite_time(m.created_at), finite_time(m.updated_at), ctx.now
            ),
            updated_at=ctx.now,
            literal=sa.literal,
        )
        insert = (
            self.insert(U)
            .from_select([U.c[k] for k in row], sa.select(*row.values()).where(missing))
            .on_conflict_do_nothing()
        )
        history = history_values(
            transaction_id=utx_id,
            legacy_system=sa.literal(self.system.value, sa.String),
            legacy_id=m.id,
            from_status=sa.null(),
            to_status=m.mapped,
            from_legacy_status=sa.null(),
            to_legacy_status=m.status,
            reason=ctx.reason,
            triggered_by=ctx.writer,
            meta=self._meta(ctx, sa.case((ctx.is_frozen, FLAG_FROZEN), else_=sa.null())),
            operation_id=ctx.uuid(),
            mode=ctx.mode,
            override=sa.false(),
            created_at=ctx.now,
        )
        columns = [H.c[k] for k in history]
        if not concurrent:
            return [
                sa.insert(H).from_select(columns, sa.select(*history.values()).where(missing)),
                insert,
            ]
        created = insert.returning(U.c.legacy_id).cte(cte_name("created"))
        select = sa.select(*history.values()).join_from(
            m.id.table, created, created.c.legacy_id == m.id
        )
        return [sa.insert(H).from_select(columns, select).add_cte(created)]

    # --- deleted legacy rows --------------------------------------------------------

    def deleted(self, r: Rows, ctx: Context) -> list[sa.Executable]:
        """A legacy row deleted: its unified row is kept (a money record; check reports it
        as ``orphan_unified`` for an operator, as repair does), the deletion goes into its
        history, flagged, and an open quarantine entry of the row is closed."""
        counts = sa.select(
            sa.func.count().label("writes"),
            sa.func.count().label("flagged"),
            sa.literal(0, sa.BigInteger).label("unmappable"),
        ).select_from(r.rows)
        history = history_values(
            transaction_id=U.c.id,
            legacy_system=sa.literal(self.system.value, sa.String),
            legacy_id=r.c.id,
            from_status=U.c.status,
            to_status=U.c.status,
            from_legacy_status=r.c.status,
            to_legacy_status=sa.null(),
            reason=ctx.reason,
            triggered_by=ctx.writer,
            meta=self._meta(ctx, sa.literal(FLAG_DELETED, sa.String)),
            operation_id=ctx.uuid(),
            mode=ctx.mode,
            override=sa.false(),
            created_at=ctx.now,
        )
        write_history = sa.insert(H).from_select(
            [H.c[k] for k in history],
            sa.select(*history.values()).join_from(r.rows, U, self._unified_of(r.c.id)),
        )
        gone = (
            sa.update(Q)
            .where(
                Q.c.system == self.system.value,
                Q.c.resolved_at.is_(None),
                Q.c.legacy_id.in_(sa.select(r.c.id).scalar_subquery()),
            )
            .values(resolved_at=ctx.now, resolution="legacy_row_gone")
        )
        counted = count_writes(self.insert, self.system.value, counts.subquery("counts"), ctx)
        return [counted, write_history, gone]

    # --- LEGACY_ONLY ------------------------------------------------------------------

    def log_changed(self, r: Rows, now: sa.ColumnElement[Any]) -> sa.Executable:
        """Remember the changed entities whose unified row now goes stale (cheap: one
        index probe per row). A row without one has nothing to go stale: the backfill
        creates it, as before."""
        C = capture_changed
        select = sa.select(sa.literal(self.system.value, sa.String), r.c.id, now).where(
            sa.exists(sa.select(U.c.id).where(self._unified_of(r.c.id)))
        )
        stmt = self.insert(C).from_select([C.c.system, C.c.legacy_id, C.c.changed_at], select)
        logged: sa.Executable = stmt.on_conflict_do_nothing(
            index_elements=[C.c.system, C.c.legacy_id]
        )
        return logged

    def catch_up(self, ctx: Context, *, lock: bool) -> list[sa.Executable]:
        """Entering a mode that maintains unified: the logged entities brought in step,
        then the log of this system emptied."""
        C = capture_changed
        lt = self.lt
        logged = sa.and_(C.c.system == self.system.value, C.c.legacy_id == lt.id)
        r = Rows.of_table(lt, lt.table.join(C, logged))
        done = sa.delete(C).where(C.c.system == self.system.value)
        return [*self.bring_in_step(r, ctx, lock=lock, bypass=False), done]
