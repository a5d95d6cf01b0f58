"""PostgreSQL's operations (:class:`PostgresOps`): the mode locks as transaction-scoped
advisory locks (:mod:`unistatus.db.mode_lock_keys`, taken with the writer mark in the
same call), bounds set with ``SET LOCAL``, skipped row locks, and the server's views on
its health (:mod:`unistatus.db.server_views`).

The operations and their generic behaviour: :mod:`unistatus.db.dialect_base`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from unistatus.db import server_views, writer_mark
from unistatus.db.binding import qualify
from unistatus.db.dialect_base import DialectOps
from unistatus.db.isolation import read_committed
from unistatus.db.mode_lock_keys import LOCKED_MODE_FUNCTION, SUMMARY_LOCK, system_lock_key
from unistatus.db.mode_lock_wait import take_waiting_politely
from unistatus.domain.statuses import LegacySystemType

__all__ = ["PostgresOps"]


class PostgresOps(DialectOps):
    name = "postgresql"
    supports_skip_locked = True
    supports_dml_cte = True
    supports_schemas = True
    # Every mode lock statement sets the writer mark in the same call.
    mode_lock_marks = True
    concurrent_reads = True

    def _mode_locks_shared(self, system: LegacySystemType | None) -> list[Any]:
        """The shared mode locks of ``system``, held until the transaction ends."""
        return [sa.func.pg_advisory_xact_lock_shared(k) for k in self.mode_lock_keys(system)]

    def mode_shared_lock_statement(self, system: LegacySystemType | None = None) -> sa.Select[Any]:
        return sa.select(*self._mode_locks_shared(system), writer_mark.set_mark())

    def mode_exclusive_lock(
        self,
        conn: sa.Connection,
        system: LegacySystemType | None = None,
        *,
        wait_seconds: float | None = None,
        share_locked: Sequence[str] = (),
        exclusive_locked: Sequence[str] = (),
    ) -> None:
        key = self.mode_lock_key
        if system is None:
            locks = [sa.func.pg_advisory_xact_lock(key)]
            blockers = [(key, False)]
        else:
            # The installation's lock shared (a switch of every system excludes this
            # one), then the system's exclusive: its writers only.
            own = system_lock_key(key, system.value)
            locks = [sa.func.pg_advisory_xact_lock_shared(key), sa.func.pg_advisory_xact_lock(own)]
            blockers = [(key, True), (own, False)]
        what = "mode lock" + ("" if system is None else f" of {system.value}")
        if share_locked:
            what += " and the writes to " + ", ".join(share_locked)
        if exclusive_locked:
            what += " and every use of " + ", ".join(exclusive_locked)
        take = sa.select(*locks, writer_mark.set_mark())
        take_waiting_politely(
            conn,
            take,
            blockers,
            what,
            wait_seconds=wait_seconds,
            tables=share_locked,
            exclusive=exclusive_locked,
        )

    def summary_lock(self, conn: sa.Connection) -> None:
        key = system_lock_key(self.mode_lock_key, SUMMARY_LOCK)
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))

    def mode_lock_clause(self, system: LegacySystemType | None = None) -> sa.ColumnElement[bool]:
        # An uncorrelated sub-select runs once, before any row is scanned or locked,
        # so the advisory locks are always taken before the row lock (no lock-order
        # inversion with a mode switch that later locks rows to replay changes). It
        # sets the writer mark in the same call.
        sub = sa.select(
            sa.func.concat(
                *(lock.cast(sa.Text) for lock in self._mode_locks_shared(system)),
                writer_mark.set_mark(),
            )
        )
        return sub.scalar_subquery().is_not(None)

    def _prepare_write(self, conn: sa.Connection) -> sa.Connection:
        return read_committed(conn)

    def mark_writer(self, conn: sa.Connection) -> None:
        conn.execute(sa.select(writer_mark.set_mark()))

    def unmark_writer(self, conn: sa.Connection) -> None:
        conn.execute(sa.select(writer_mark.clear_mark()))

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)

    def integer_series(self, n: int) -> sa.FromClause:
        return sa.select(
            sa.func.generate_series(1, sa.literal(n, sa.BigInteger)).label("g")
        ).subquery("series")

    def seconds_before(
        self, moment: datetime, seconds: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[Any]:
        one_second = sa.literal_column("INTERVAL '1 second'", sa.Interval)
        return sa.literal(moment, sa.DateTime(timezone=True)) - seconds * one_second

    def bound_statements(self, conn: sa.Connection, statement_ms: int, lock_ms: int) -> None:
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(statement_ms)}")
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(lock_ms)}")

    @contextmanager
    def waiting_while_held(self, conn: sa.Connection) -> Iterator[None]:
        before = conn.execute(sa.select(sa.func.current_setting("lock_timeout"))).scalar_one()
        conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
        yield
        # Not after a failure: the transaction is rolled back, and its SET LOCAL with it.
        conn.execute(sa.select(sa.func.set_config("lock_timeout", before, True)))

    def plan_for_scans(
        self, conn: sa.Connection, work_mem_mb: int = 0, *, parallel: bool = True
    ) -> None:
        settings = {"jit": "off"}
        if work_mem_mb:
            settings["work_mem"] = f"{int(work_mem_mb)}MB"
        if not parallel:
            settings["max_parallel_workers_per_gather"] = "0"
        conn.exec_driver_sql(_set_local_sql(settings))

    def bound_exclusive(
        self, conn: sa.Connection, *, statement_ms: int, lock_ms: int, idle_ms: int
    ) -> None:
        settings = {
            "statement_timeout": int(statement_ms),
            "lock_timeout": int(lock_ms),
            "idle_in_transaction_session_timeout": int(idle_ms),
        }
        if (conn.dialect.server_version_info or (0,)) >= (14,):
            # A statement still running when its client died ends within this period.
            settings["client_connection_check_interval"] = min(int(lock_ms), 1000)
        conn.exec_driver_sql(_set_local_sql(settings))

    def lock_rows_skip_busy(self, query: sa.Select[Any]) -> sa.Select[Any]:
        return query.with_for_update(skip_locked=True)

    def has_locked_mode_function(self, conn: sa.Connection) -> bool:
        name = qualify(LOCKED_MODE_FUNCTION, self.schema, conn.dialect)
        found = conn.execute(sa.select(sa.func.to_regprocedure(f"{name}(text)")))
        return found.scalar() is not None

    def bound_batch(self, conn: sa.Connection, statement_ms: int, lock_ms: int) -> None:
        # One round trip instead of three: set_config(..., true) is SET LOCAL.
        conn.execute(sa.select(*_batch_settings(statement_ms, lock_ms)))

    def _mark_and_bound_batch(self, conn: sa.Connection, statement_ms: int, lock_ms: int) -> None:
        # The writer mark is a set_config too: the same round trip.
        conn.execute(sa.select(writer_mark.set_mark(), *_batch_settings(statement_ms, lock_ms)))

    @contextmanager
    def snapshot(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                yield conn

    def replication_lag_seconds(self, conn: sa.Connection) -> float | None:
        value = conn.execute(server_views.replication_lag()).scalar()
        return None if value is None else float(value)

    def lock_waits(self, conn: sa.Connection, tables: list[sa.Table]) -> int | None:
        names = [qualify(t.name, conn.schema_for_object(t), conn.dialect) for t in tables]
        if not names:
            return 0
        oids = [sa.func.to_regclass(sa.cast(sa.literal(n), sa.Text)) for n in names]
        return int(conn.execute(server_views.lock_waits_count(oids)).scalar_one())

    def live_sessions(self, conn: sa.Connection, *, siblings: bool = False) -> int | None:
        return int(conn.execute(server_views.live_sessions_count(siblings=siblings)).scalar_one())

    def activity_view(self, conn: sa.Connection) -> tuple[str, bool] | None:
        role, full = conn.execute(server_views.activity_view()).one()
        return str(role), bool(full)

    def sync_identity(self, conn: sa.Connection, column: sa.Column[Any]) -> None:
        # A serial/identity column's sequence does not move on explicit inserts.
        table = column.table
        name = qualify(table.name, conn.schema_for_object(table), conn.dialect)
        seq = sa.func.pg_get_serial_sequence(sa.literal(name), sa.literal(column.name))
        top = sa.select(sa.func.max(column)).scalar_subquery()
        conn.execute(
            sa.select(sa.func.setval(seq, sa.func.coalesce(top, 1), top.is_not(None))).where(
                seq.is_not(None)
            )
        )


def _set_local_sql(settings: dict[str, Any]) -> str:
    """PostgreSQL: ONE statement setting each of ``settings`` for the transaction (SET
    LOCAL), its values written literally (names and values of our own, never input)."""
    return "SELECT " + ", ".join(f"set_config('{k}', '{v}', true)" for k, v in settings.items())


def _batch_settings(statement_ms: int, lock_ms: int) -> list[sa.FunctionElement[Any]]:
    """PostgreSQL: a batch's timeouts and asynchronous commit, as SET LOCAL calls."""
    values = {
        "statement_timeout": str(int(statement_ms)),
        "lock_timeout": str(int(lock_ms)),
        "synchronous_commit": "off",
    }
    return [sa.func.set_config(name, value, True, type_=sa.Text) for name, value in values.items()]
