"""The DualWriteAdapter's hot-path statements, built once per legacy system.

Locks, guarded writes, creates (with their idempotency key) and the fast path's reads
and guarded writes, each compiled once with :class:`unistatus.db.prepared.Prepared`.
The list and the mode guard: docs/adapter.md, "The prepared statements".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from unistatus.adapter.model import UNIFIED_LOCK_KEYS
from unistatus.adapter.writes import HISTORY_KEYS, history_values, legacy_row, unified_row
from unistatus.db.cte_names import cte_name
from unistatus.db.dialect import DialectOps
from unistatus.db.legacy import DATA_COLUMNS, LegacyTable, legacy_select, legacy_status_column
from unistatus.db.mode_lock_keys import locked_mode_function
from unistatus.db.mode_reads import stored_mode
from unistatus.db.prepared import Prepared
from unistatus.db.server_clock import DatabaseClock
from unistatus.db.tables import status_history
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_idempotency import idempotency_keys
from unistatus.domain.ids import outside_utx_range_sql, utx_id_sql
from unistatus.domain.statuses import LegacySystemType

__all__ = ["HotStatements", "stored_status"]


# What a created row's unified id is in SQL when its legacy id is beyond the UTX range:
# no UTX id looks like it, so it meets no other row before the adapter refuses the id
# and deletes what the statement wrote (``Creator._refuse_beyond_range``).
BEYOND_RANGE = "UTX-beyond-range"


def stored_status(lt: LegacyTable) -> sa.ColumnElement[Any]:
    """In a legacy write's RETURNING: the status it stored, which the application's
    BEFORE trigger may have changed from the one sent (:mod:`unistatus.adapter.held`)."""
    return lt.read("status").label("stored")


def _created_utx_id(system: LegacySystemType, legacy_id: Any) -> Any:
    """``utx_id_sql``, but never the next system's id (nor too long for the column)."""
    return sa.case(
        (~outside_utx_range_sql(legacy_id), utx_id_sql(system, legacy_id)),
        else_=sa.literal(BEYOND_RANGE, sa.String),
    )


class HotStatements:
    """Prepared hot-path statements for the adapter, built on first use per system."""

    def __init__(
        self,
        legacy: dict[LegacySystemType, LegacyTable],
        ops: DialectOps,
        *,
        locked_mode: bool = False,
        clock: DatabaseClock | None = None,
    ) -> None:
        self.ops = ops
        # The time a write stamps: the database's (server_clock.clock_of its engine).
        self.clock = clock or DatabaseClock()
        # unistatus_locked_mode(system) is installed: guards take the mode lock themselves.
        self.locked_mode = locked_mode
        # The tables and the statements built on them, swapped together by reload().
        self._state: tuple[
            dict[LegacySystemType, LegacyTable], dict[tuple[str, LegacySystemType | None], Prepared]
        ] = (legacy, {})

    @property
    def legacy(self) -> dict[LegacySystemType, LegacyTable]:
        """The legacy tables the statements are built on."""
        return self._state[0]

    def reload(self, legacy: dict[LegacySystemType, LegacyTable]) -> None:
        """Build on newly reflected tables from now on (a statement being built on the
        old ones meanwhile is used once, then dropped with the old cache)."""
        self._state = (legacy, {})

    def _get(
        self,
        name: str,
        system: LegacySystemType | None,
        build: Callable[[], Any],
    ) -> Prepared:
        key = (name, system)
        cache = self._state[1]
        prepared = cache.get(key)
        if prepared is None:  # a race only builds the same statement twice
            prepared = cache[key] = Prepared(build(), self.ops.engine)
        return prepared

    # --- locking ----------------------------------------------------------------------

    def lock_legacy(self, system: LegacySystemType) -> Prepared:
        def build() -> Any:
            lt = self.legacy[system]
            q = legacy_select(lt).where(lt.id == sa.bindparam("p_legacy_id"))
            return self._with_mode_lock(q.with_for_update(), system)

        return self._get("lock_legacy", system, build)

    def lock_both(self, system: LegacySystemType) -> Prepared:
        """Legacy row and its unified row, both locked: LEGACY_COLUMNS + u_UNIFIED_LOCK_KEYS.

        Both rows are locked, so PostgreSQL re-reads both at their latest committed
        versions after waiting (a joined row that is only read could be stale).
        """

        return self._get(
            "lock_both",
            system,
            lambda: self._with_mode_lock(self._both_select(system).with_for_update(), system),
        )

    def _both_select(self, system: LegacySystemType) -> sa.Select[Any]:
        """The legacy row joined to its unified row: LEGACY_COLUMNS + u_UNIFIED_LOCK_KEYS."""
        lt = self.legacy[system]
        return (
            legacy_select(lt)
            .add_columns(*(U.c[k].label(f"u_{k}") for k in UNIFIED_LOCK_KEYS))
            .join_from(lt.table, U, self._unified_of(system, lt))
            .where(lt.id == sa.bindparam("p_legacy_id"))
        )

    def locked_mode_of(self, system: LegacySystemType) -> Any:
        """The mode locks of ``system`` and a fresh read of its mode in one value
        (PostgreSQL, revision 0015). Uncorrelated, so the planner evaluates it once, as
        a one-time filter, before any row is read or locked: the advisory locks are
        always taken before row locks (as a mode switch takes them), and the mode it
        returns is the one no switch of that system can change until commit."""
        return sa.select(locked_mode_function(self.ops.schema, system)).scalar_subquery()

    def _mode_guard(self, system: LegacySystemType) -> Any:
        """``system``'s stored mode as a create's guard compares it: with the mode lock
        taken in the same statement where the database can (then no separate lock
        statement)."""
        return self.locked_mode_of(system) if self.locked_mode else stored_mode(system)

    def _with_mode_lock(self, q: sa.Select[Any], system: LegacySystemType) -> sa.Select[Any]:
        lock_clause = self.ops.mode_lock_clause(system)
        return q.where(lock_clause) if lock_clause is not None else q

    # --- status changes ---------------------------------------------------------------

    def legacy_write(self, system: LegacySystemType) -> Prepared:
        return self._get("legacy_write", system, lambda: self._legacy_update(system))

    def _legacy_update(self, system: LegacySystemType) -> Any:
        """Guarded legacy UPDATE: writes only while the stored mode is ``p_mode``. Its
        rows: the id and the status it stored (:func:`stored_status`)."""
        lt = self.legacy[system]
        return (
            sa.update(lt.table)
            .where(
                lt.id == sa.bindparam("p_legacy_id"), stored_mode(system) == sa.bindparam("p_mode")
            )
            .values(self._legacy_values(lt))
            .returning(lt.id, stored_status(lt))
        )

    def dual_write(self, system: LegacySystemType) -> Prepared:
        """Guarded legacy UPDATE + unified UPDATE + history INSERT: one row, the count of
        history rows written (1) and the status legacy stored."""

        def build() -> Any:
            legacy_cte = self._legacy_update(system).cte(cte_name("legacy_write"))
            history_cte = self._dual_update(legacy_cte)
            stored = sa.select(legacy_cte.c.stored).scalar_subquery()
            return sa.select(sa.func.count(), stored).select_from(history_cte)

        return self._get("dual_write", system, build)

    def _dual_update(self, legacy_cte: Any) -> Any:
        """Unified UPDATE + history INSERT after ``legacy_cte``: the history CTE."""
        unified_cte = self._unified_update(
            U.c.id == sa.bindparam("p_utx_id"), sa.exists(sa.select(legacy_cte))
        )
        return self._history_insert(unified_cte)

    @staticmethod
    def _unified_update(*where: Any) -> Any:
        """The unified row's status change where ``where`` holds: a CTE of its id."""
        return (
            sa.update(U)
            .where(*where)
            .values(
                status=sa.bindparam("p_status"),
                legacy_status=sa.bindparam("p_legacy_status"),
                version=U.c.version + 1,
                updated_at=sa.bindparam("p_now", type_=U.c.updated_at.type),
            )
            .returning(U.c.id)
            .cte(cte_name("unified_write"))
        )

    @staticmethod
    def _history_insert(after: Any) -> Any:
        """The change's history row, one per row of the CTE ``after``: the history CTE."""
        H = status_history
        return (
            sa.insert(H)
            .from_select(
                [H.c[k] for k in HISTORY_KEYS],
                sa.select(
                    *(sa.bindparam(f"h_{k}", type_=H.c[k].type) for k in HISTORY_KEYS)
                ).select_from(after),
            )
            .returning(H.c.id)
            .cte(cte_name("history_write"))
        )

    # --- the two-round-trip path (PostgreSQL) -----------------------------------------

    def read_legacy(self, system: LegacySystemType) -> Prepared:
        """The legacy row, unlocked: LEGACY_COLUMNS."""

        def build() -> Any:
            lt = self.legacy[system]
            return legacy_select(lt).where(lt.id == sa.bindparam("p_legacy_id"))

        return self._get("read_legacy", system, build)

    def read_both(self, system: LegacySystemType) -> Prepared:
        """The legacy row and its unified row, unlocked: LEGACY_COLUMNS + u_UNIFIED_LOCK_KEYS."""
        return self._get("read_both", system, lambda: self._both_select(system))

    def guarded_legacy_write(self, system: LegacySystemType) -> Prepared:
        """Legacy UPDATE in one statement: only while the mode is ``p_mode`` and the row
        still holds ``p_src_legacy``. One row: (rows written, the legacy status as the
        statement found it, for a retry to plan from, the status it stored, the id of
        its unified row if it has one: the answer's id); none if the row is gone."""

        def build() -> Any:
            lt = self.legacy[system]
            write = (
                sa.update(lt.table)
                .where(
                    lt.id == sa.bindparam("p_legacy_id"),
                    self._src_legacy_holds(lt),
                    self.locked_mode_of(system) == sa.bindparam("p_mode"),
                )
                .values(self._legacy_values(lt))
                .returning(stored_status(lt))
                .cte(cte_name("legacy_write"))
            )
            written = sa.select(sa.func.count()).select_from(write).scalar_subquery()
            stored = sa.select(write.c.stored).scalar_subquery()
            unified_id = (
                sa.select(U.c.id)
                .where(U.c.legacy_system == system.value, U.c.legacy_id == lt.id)
                .scalar_subquery()
            )
            return sa.select(written, lt.read("status"), stored, unified_id).where(
                lt.id == sa.bindparam("p_legacy_id")
            )

        return self._get("guarded_legacy_write", system, build)

    def guarded_dual_write(self, system: LegacySystemType) -> Prepared:
        """Lock the legacy row, re-check both rows and the mode, then write both and the
        history.

        The ``locked`` CTE takes the mode lock (one-time filter), then locks the legacy
        row FOR UPDATE if it still holds the planned legacy status and the mode is
        ``p_mode``. The unified UPDATE runs only then, and only if its row still holds
        the planned status, legacy_status and version: that UPDATE's own row lock and
        WHERE are the unified guard (after waiting for a concurrent writer, PostgreSQL
        re-checks the WHERE against the row's latest version). The legacy UPDATE runs
        only if the unified one did, on the row this statement already holds, and the
        history row only after both: all three, or none. Rows are locked in the same
        order as ``lock_both`` (legacy, then unified); one explicit row lock fewer than
        locking both rows first (one WAL record and buffer change less per write).

        One row: (history rows written, then the legacy status and the unified status,
        legacy_status and version as the statement found them, so that a write refused
        for a stale state can be planned again without another read, then the status
        legacy stored); none if a row is gone.
        """

        def build() -> Any:
            lt = self.legacy[system]
            legacy_id = lt.id == sa.bindparam("p_legacy_id")
            locked = (
                sa.select(lt.id)
                .where(
                    legacy_id,
                    self._src_legacy_holds(lt),
                    self.locked_mode_of(system) == sa.bindparam("p_mode"),
                )
                .with_for_update()
                .cte(cte_name("locked"))
            )
            unified_cte = self._unified_update(
                U.c.id == sa.bindparam("p_utx_id"),
                U.c.legacy_system == system.value,
                U.c.legacy_id == sa.bindparam("p_legacy_id"),
                U.c.status == sa.bindparam("p_src_status"),
                U.c.legacy_status.is_not_distinct_from(
                    sa.bindparam("p_src_unified_legacy", type_=sa.String)
                ),
                U.c.version == sa.bindparam("p_version"),
                sa.exists(sa.select(locked)),
            )
            legacy_cte = (
                sa.update(lt.table)
                .where(legacy_id, sa.exists(sa.select(unified_cte)))
                .values(self._legacy_values(lt))
                .returning(lt.id, stored_status(lt))
                .cte(cte_name("legacy_write"))
            )
            history_cte = self._history_insert(legacy_cte)
            written = sa.select(sa.func.count()).select_from(history_cte).scalar_subquery()
            return (
                sa.select(
                    written,
                    lt.read("status"),
                    U.c.status,
                    U.c.legacy_status,
                    U.c.version,
                    sa.select(legacy_cte.c.stored).scalar_subquery(),
                )
                .join_from(lt.table, U, self._unified_of(system, lt))
                .where(legacy_id)
            )

        return self._get("guarded_dual_write", system, build)

    @staticmethod
    def _src_legacy_holds(lt: LegacyTable) -> sa.ColumnElement[bool]:
        """The legacy row still holds the status the write was planned from."""
        src = sa.bindparam("p_src_legacy", type_=sa.String)
        return lt.read("status").is_not_distinct_from(src)

    @staticmethod
    def _unified_of(system: LegacySystemType, lt: LegacyTable) -> sa.ColumnElement[bool]:
        return sa.and_(U.c.legacy_system == system.value, U.c.legacy_id == lt.id)

    @staticmethod
    def _legacy_values(lt: LegacyTable) -> dict[str, Any]:
        return {
            legacy_status_column(lt).key: lt.as_stored("status", sa.bindparam("p_legacy_status")),
            lt.updated_at.key: sa.bindparam("p_now", type_=lt.updated_at.type),
        }

    # --- creation ---------------------------------------------------------------------

    def create_legacy(
        self, system: LegacySystemType, *, keyed: bool = False, extra: tuple[str, ...] = ()
    ) -> Prepared:
        """Guarded legacy INSERT of a new transaction; RETURNING its id, then the status it
        stored (an application's BEFORE trigger may have changed it): no row, the mode
        moved.

        With ``locked_mode`` the guard takes the mode lock and reads the mode afresh;
        otherwise the caller takes the mode lock first (:meth:`mode_lock`). ``keyed``: the
        idempotency key's row too, and the row is (legacy id, key rows written).
        ``extra``: the application's own columns set too, bound as ``x_0``, ``x_1``, ...
        in that order (``legacy_values``; one statement per list of columns used).
        """

        def build() -> Any:
            if not keyed:
                return self._legacy_insert(system, extra)
            legacy_cte = self._legacy_insert(system, extra).cte(cte_name("legacy_insert"))
            key_cte = self._key_insert(
                system, _created_utx_id(system, legacy_cte.c.id), legacy_cte.c.id, legacy_cte
            )
            keys = sa.select(sa.func.count()).select_from(key_cte).scalar_subquery()
            return sa.select(legacy_cte.c.id, keys, legacy_cte.c.stored)

        name = "create_legacy_keyed" if keyed else "create_legacy"
        return self._get(f"{name}{list(extra) if extra else ''}", system, build)

    def _key_insert(
        self, system: LegacySystemType, utx_id: Any, legacy_id: Any, source: Any
    ) -> Any:
        """The idempotency key's row, one per row of ``source``: a CTE. A repeated key
        fails the whole statement on the key's primary key (the adapter then replays)."""
        K = idempotency_keys
        values = sa.select(
            sa.bindparam("k_key", type_=K.c.key.type),
            sa.bindparam("k_request_hash", type_=K.c.request_hash.type),
            sa.bindparam("c_operation_id", type_=K.c.operation_id.type),
            utx_id,
            sa.literal(system.value),
            legacy_id,
            sa.bindparam("p_mode", type_=K.c.mode.type),
            sa.bindparam("c_status", type_=K.c.status.type),
            sa.bindparam("c_legacy_status", type_=K.c.legacy_status.type),
            sa.bindparam("c_now", type_=K.c.created_at.type),
        ).select_from(source)
        columns = [
            K.c.key,
            K.c.request_hash,
            K.c.operation_id,
            K.c.transaction_id,
            K.c.legacy_system,
            K.c.legacy_id,
            K.c.mode,
            K.c.status,
            K.c.legacy_status,
            K.c.created_at,
        ]
        return (
            sa.insert(K).from_select(columns, values).returning(K.c.key).cte(cte_name("key_insert"))
        )

    def _legacy_insert(self, system: LegacySystemType, extra: tuple[str, ...] = ()) -> Any:
        lt = self.legacy[system]
        row = legacy_row(
            lt,
            data={n: sa.bindparam(f"c_{n}", type_=lt.column(n).type) for n in DATA_COLUMNS},
            status=sa.bindparam("c_legacy_status", type_=sa.String),
            now=sa.bindparam("c_now", type_=lt.created_at.type),
            extra={
                n: sa.bindparam(f"x_{i}", type_=lt.table.c[n].type) for i, n in enumerate(extra)
            },
        )
        values = sa.select(*row.values()).where(self._mode_guard(system) == sa.bindparam("p_mode"))
        # As "id" and "stored" whatever the columns' names: the statements around read
        # them so.
        insert = sa.insert(lt.table).from_select(list(row), values)
        return insert.returning(lt.id.label("id"), stored_status(lt))

    def create_dual(
        self, system: LegacySystemType, *, keyed: bool = False, extra: tuple[str, ...] = ()
    ) -> Prepared:
        """Guarded legacy INSERT + unified INSERT + first history row, in one statement.

        The unified id is derived from the new legacy id in SQL (``utx_id_sql``), exactly
        as :func:`unistatus.domain.ids.derive_utx_id` would. One row (unified id, legacy id,
        history rows written, then, ``keyed``, the key rows written, and last the status
        the legacy INSERT stored), or none when the mode moved. ``keyed``: the idempotency
        key's row too. ``extra``: as for :meth:`create_legacy`.
        """

        def build() -> Any:
            legacy_cte = self._legacy_insert(system, extra).cte(cte_name("legacy_insert"))
            now = sa.bindparam("c_now", type_=U.c.created_at.type)
            unified = unified_row(
                system,
                utx_id=_created_utx_id(system, legacy_cte.c.id),
                legacy_id=legacy_cte.c.id,
                data={n: sa.bindparam(f"c_{n}", type_=U.c[n].type) for n in DATA_COLUMNS},
                status=sa.bindparam("c_status", type_=U.c.status.type),
                legacy_status=sa.bindparam("c_legacy_status", type_=U.c.legacy_status.type),
                origin="dual_write",
                meta=sa.bindparam("c_meta", type_=U.c.meta.type),
                created_at=now,
                updated_at=now,
                literal=sa.literal,
            )
            unified_cte = (
                sa.insert(U)
                .from_select(
                    [U.c[k] for k in unified],
                    sa.select(*unified.values()).select_from(legacy_cte),
                )
                .returning(U.c.id, U.c.legacy_id)
                .cte(cte_name("unified_insert"))
            )
            H = status_history
            history = history_values(
                transaction_id=unified_cte.c.id,
                legacy_system=sa.literal(system.value),
                legacy_id=unified_cte.c.legacy_id,
                from_status=sa.null(),
                to_status=sa.bindparam("c_status", type_=H.c.to_status.type),
                from_legacy_status=sa.null(),
                to_legacy_status=sa.bindparam("c_legacy_status", type_=H.c.to_legacy_status.type),
                reason=sa.literal("created"),
                triggered_by=sa.bindparam("c_triggered_by", type_=H.c.triggered_by.type),
                meta=sa.bindparam("c_meta", type_=H.c.meta.type),
                operation_id=sa.bindparam("c_operation_id", type_=H.c.operation_id.type),
                mode=sa.bindparam("p_mode", type_=H.c.mode.type),
                override=sa.false(),
                created_at=sa.bindparam("c_now", type_=H.c.created_at.type),
            )
            history_cte = (
                sa.insert(H)
                .from_select(
                    [H.c[k] for k in history],
                    sa.select(*history.values()).select_from(unified_cte),
                )
                .returning(H.c.id)
                .cte(cte_name("history_insert"))
            )
            written = sa.select(sa.func.count()).select_from(history_cte).scalar_subquery()
            stored = sa.select(legacy_cte.c.stored).scalar_subquery()
            if not keyed:
                return sa.select(unified_cte.c.id, unified_cte.c.legacy_id, written, stored)
            key_cte = self._key_insert(
                system, unified_cte.c.id, unified_cte.c.legacy_id, unified_cte
            )
            keys = sa.select(sa.func.count()).select_from(key_cte).scalar_subquery()
            return sa.select(unified_cte.c.id, unified_cte.c.legacy_id, written, keys, stored)

        name = "create_dual_keyed" if keyed else "create_dual"
        return self._get(f"{name}{list(extra) if extra else ''}", system, build)
