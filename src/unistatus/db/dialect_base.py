"""The operations every backend offers, and their generic behaviour: :class:`DialectOps`.

Everything else in unistatus is written once against SQLAlchemy Core and asks this
class for the few things that really differ: how a write transaction begins, how a
write excludes a concurrent mode switch (:meth:`DialectOps.mode_shared_lock`), how a
conflicting insert is skipped, how long-running statements are bounded, whether a
catalog object exists, and what the server can say about its own health (replication
lag, sessions waiting for a lock). The generic answer is here (SQLite's needs little
more); each backend overrides what differs (:mod:`unistatus.db.dialect_sqlite`,
:mod:`unistatus.db.dialect_postgres`), and :func:`unistatus.db.dialect.ops_for` picks
one for an engine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.db.binding import schema_of
from unistatus.db.cte_names import cte_name
from unistatus.db.mode_lock_keys import mode_lock_key, system_lock_key
from unistatus.db.prepared import Prepared
from unistatus.domain.statuses import LegacySystemType

__all__ = ["DialectOps"]


class DialectOps:
    """Base: behaviour shared by every backend (and SQLite's, which needs little)."""

    name = "generic"
    # Significant digits a NUMERIC column keeps exactly (None: all of Numeric(20, 8)).
    exact_numeric_digits: int | None = None
    supports_skip_locked = False
    supports_dml_cte = False
    # Schemas in one database (views a reader reaches through its search_path).
    supports_schemas = False
    # Adapter writes of one process let through at once (settings.write_concurrency).
    default_write_concurrency = 4
    # Whether taking the mode lock also marks the transaction as unistatus's writes
    # (:mod:`unistatus.db.writer_mark`): a writer that takes it first needs no mark.
    mode_lock_marks = False
    # Whether reads on several connections at once run side by side (one check walks
    # its systems at once): not SQLite's, whose in-memory database is one connection.
    concurrent_reads = False

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        # Where our tables are (unistatus.db.binding), and so which mode lock is ours.
        self.schema = schema_of(engine)
        self.mode_lock_key = mode_lock_key(self.schema)
        self._shared_locks: dict[LegacySystemType | None, Prepared] = {}

    @contextmanager
    def write_transaction(self, *, mode_locked: bool = False) -> Iterator[sa.Connection]:
        """A transaction that will write: on SQLite it takes the write lock up front.

        It carries the writer mark while it writes, so the capture triggers leave its
        writes alone (:mod:`unistatus.db.writer_mark`). ``mode_locked``: the caller takes
        the mode lock before its first write, which marks it where
        :attr:`mode_lock_marks` (the adapter's writes: no extra round trip).
        """
        with self.engine.connect() as conn:
            conn = self._prepare_write(conn)
            with conn.begin():
                if not (mode_locked and self.mode_lock_marks):
                    self.mark_writer(conn)
                yield conn
                self.end_writer_mark(conn)

    @contextmanager
    def rolled_back(self, *, statement_ms: int, lock_ms: int) -> Iterator[sa.Connection]:
        """A write transaction that always ends in ROLLBACK: to time real statements on
        a sample (``unistatus plan``) and leave nothing behind. Marked as unistatus's
        writes (the capture triggers leave it alone) and bounded, so it never makes a
        live writer wait long."""
        with self.engine.connect() as conn:
            conn = self._prepare_write(conn)
            tx = conn.begin()
            try:
                self.bound_statements(conn, statement_ms, lock_ms)
                self.mark_writer(conn)
                yield conn
            finally:
                tx.rollback()

    @contextmanager
    def batch_transaction(self, statement_ms: int, lock_ms: int) -> Iterator[sa.Connection]:
        """:meth:`write_transaction` bounded by :meth:`bound_batch`: a backfill batch.

        The writer mark and the bounds are set together (PostgreSQL: one round trip for
        both, where a batch is otherwise one statement and its commit).
        """
        with self.engine.connect() as conn:
            conn = self._prepare_write(conn)
            with conn.begin():
                self._mark_and_bound_batch(conn, statement_ms, lock_ms)
                yield conn
                self.end_writer_mark(conn)

    def _mark_and_bound_batch(self, conn: sa.Connection, statement_ms: int, lock_ms: int) -> None:
        self.mark_writer(conn)
        self.bound_batch(conn, statement_ms, lock_ms)

    def _prepare_write(self, conn: sa.Connection) -> sa.Connection:
        return conn

    def mark_writer(self, conn: sa.Connection) -> None:
        """Mark ``conn``'s transaction as unistatus's writes from now on."""

    def unmark_writer(self, conn: sa.Connection) -> None:
        """Remove the mark in a transaction that goes on (the caller's): its own SQL
        after this is captured like any other writer's."""

    def end_writer_mark(self, conn: sa.Connection) -> None:
        """Remove the mark before COMMIT, where it would outlive the transaction."""

    def mode_lock_keys(self, system: LegacySystemType | None) -> tuple[int, ...]:
        """The advisory locks a writer of ``system`` holds shared, in the order taken:
        the installation's (:attr:`mode_lock_key`), then the system's
        (:func:`system_lock_key`); None: every system's."""
        systems = tuple(LegacySystemType) if system is None else (system,)
        return (
            self.mode_lock_key,
            *(system_lock_key(self.mode_lock_key, s.value) for s in systems),
        )

    def mode_shared_lock(self, conn: sa.Connection, system: LegacySystemType | None = None) -> None:
        """Take the mode lock of ``system`` shared (None: of every system), in ``conn``'s
        write transaction, until it ends.

        THE call for every write that must not overlap a mode switch of its system
        (which takes the lock exclusive, :meth:`mode_exclusive_lock`): take it before
        locking any row, then read the mode. The statement is compiled once per ops
        object and system, so the adapter's hot path can take it too. On SQLite
        :meth:`write_transaction`'s ``BEGIN IMMEDIATE`` already holds the whole
        database: nothing to do.
        """
        prepared = self._shared_locks.get(system)
        if prepared is None:
            stmt = self.mode_shared_lock_statement(system)
            if stmt is None:
                return
            prepared = self._shared_locks[system] = Prepared(stmt, self.engine)
        prepared.rows(conn, {})

    def mode_shared_lock_statement(
        self, system: LegacySystemType | None = None
    ) -> sa.Select[Any] | None:
        """:meth:`mode_shared_lock` as a statement (None: the dialect needs no lock)."""
        return None

    def mode_exclusive_lock(
        self,
        conn: sa.Connection,
        system: LegacySystemType | None = None,
        *,
        wait_seconds: float | None = None,
        share_locked: Sequence[str] = (),
        exclusive_locked: Sequence[str] = (),
    ) -> None:
        """Taken by a mode switch: waits for in-flight writes, holds new ones back.

        ``system``: only that system's writes (a switch of that system); None: every
        write (a switch of every system, the replay of every system). On PostgreSQL it
        queues a little at a time, letting writers by between attempts, and gives up
        with :class:`~unistatus.errors.ModeLockBusyError` after ``wait_seconds`` (None:
        :data:`unistatus.db.mode_lock_wait.WAIT_SECONDS`; :mod:`unistatus.db.mode_lock_wait`).
        ``share_locked``: tables (SQL names) whose writers are held back too, locked
        SHARE with it in each attempt (SQLite's write transaction holds them already);
        ``exclusive_locked``: relations (SQL names) locked ACCESS EXCLUSIVE with it in
        each attempt, so that their readers end first (views about to be dropped).
        """

    def summary_lock(self, conn: sa.Connection) -> None:
        """Taken, after the system's mode lock, by a writer of the global summary of a
        per-system control value (:func:`unistatus.db.system_keys.write_summary`), so
        writers of different systems write it one at a time. SQLite's write transaction
        already holds the whole database: nothing to do."""

    def mode_lock_clause(
        self, system: LegacySystemType | None = None
    ) -> sa.ColumnElement[bool] | None:
        """The shared lock of ``system`` as a WHERE clause, to take it inside the
        entity-lock SELECT."""
        return None

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that understands ON CONFLICT (both backends spell it alike)."""
        return sa.insert(table)

    def bound_statements(self, conn: sa.Connection, statement_ms: int, lock_ms: int) -> None:
        """Bound how long statements and lock waits may take in this transaction."""

    @contextmanager
    def waiting_while_held(self, conn: sa.Connection) -> Iterator[None]:
        """The statements of the block wait for a lock as long as it is held
        (PostgreSQL: no ``lock_timeout``; the transaction's own again after the block),
        where waiting is the design: a second backfill planner waiting on the job's row
        for the first to plan the chunks it then joins (seconds, on a large table), a
        second seed for the first's rows."""
        yield

    def plan_for_scans(
        self, conn: sa.Connection, work_mem_mb: int = 0, *, parallel: bool = True
    ) -> None:
        """Plan this transaction's statements for a scan of a key range (PostgreSQL):
        without JIT compilation (a check range's CASE-heavy statement costs above
        ``jit_above_cost`` from about a million rows on, and compiling it took longer
        than reading the range), and with ``work_mem_mb`` (0: the server's setting) for
        its hash tables: a range's join hashed in the default 4 MB spills to temporary
        files (three systems at once, 500k rows: median 0.81 s, with 64 MB 0.73 s).
        ``parallel=False``: no parallel workers, one core (a scan that runs beside live
        traffic, as continuous verification does)."""

    def bound_batch(self, conn: sa.Connection, statement_ms: int, lock_ms: int) -> None:
        """:meth:`bound_statements`, and let the commit return before its WAL is on disk.

        Only for work that is idempotent and checkpointed atomically with its data (a
        backfill batch): a server crash may lose the last commits, but never half of one.
        """
        self.bound_statements(conn, statement_ms, lock_ms)

    def bound_exclusive(
        self, conn: sa.Connection, *, statement_ms: int, lock_ms: int, idle_ms: int
    ) -> None:
        """Bound a transaction that holds the exclusive mode lock (the replay's).

        Besides statement and lock waits, the server ends the session when its client
        is gone or idles in the transaction, so a killed client cannot keep the lock.
        """

    def lock_rows_skip_busy(self, query: sa.Select[Any]) -> sa.Select[Any]:
        """``query`` locking the rows it returns, leaving out rows locked elsewhere.

        Without row locks (SQLite: the write transaction holds the whole database)
        every row is returned.
        """
        return query

    def has_locked_mode_function(self, conn: sa.Connection) -> bool:
        """Whether revision 0015's ``unistatus_locked_mode(system)`` exists (PostgreSQL
        only)."""
        return False

    def integer_series(self, n: int) -> sa.FromClause:
        """Rows ``g`` = 1..n made by the database, for set-based seeding (a recursive CTE)."""
        series = sa.select(sa.literal(1, sa.BigInteger).label("g")).cte(
            cte_name("series"), recursive=True
        )
        return series.union_all(sa.select(series.c.g + 1).where(series.c.g < n))

    def seconds_before(
        self, moment: datetime, seconds: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[Any]:
        """``moment`` minus an integer SQL expression of seconds, as a storable timestamp."""
        raise NotImplementedError(f"seconds_before is not implemented for {self.name}")

    @contextmanager
    def snapshot(self) -> Iterator[sa.Connection]:
        """A read transaction that sees one consistent state of every table it reads.

        SQLite in WAL mode keeps one snapshot for the whole read transaction already.
        """
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def sync_identity(self, conn: sa.Connection, column: sa.Column[Any]) -> None:
        """After rows were inserted with explicit ids, let new rows get ids above them."""

    def replication_lag_seconds(self, conn: sa.Connection) -> float | None:
        """How far (seconds) the furthest replica is behind in replaying this server's
        changes; None when there is no replica, none is behind, or the backend has no
        replication (SQLite): nothing to wait for."""
        return None

    def lock_waits(self, conn: sa.Connection, tables: list[sa.Table]) -> int | None:
        """Sessions waiting for a lock while working on ``tables`` (None: the backend
        cannot tell; SQLite has one writer at a time and no lock table)."""
        return None

    def live_sessions(self, conn: sa.Connection, *, siblings: bool = False) -> int | None:
        """Other sessions of this database at work now or in the last second, leaving
        out unistatus's own tools (``application_name`` starting with
        :data:`~unistatus.db.engine.TOOL_APPLICATION_PREFIX`) and, unless ``siblings``,
        those named as this one: live traffic, as it is now (None: the backend cannot
        tell). Another role's session, to a role without ``pg_read_all_stats``: only
        while it holds a transaction open (:mod:`unistatus.db.server_views`)."""
        return None

    def activity_view(self, conn: sa.Connection) -> tuple[str, bool] | None:
        """This session's role, and whether it reads other roles' sessions in full
        (PostgreSQL: a superuser or a member of ``pg_read_all_stats``; None: the backend
        cannot tell). Without it :meth:`live_sessions` sees them only while they hold a
        transaction open, and :meth:`replication_lag_seconds` nothing."""
        return None

    def reads_all_activity(self, conn: sa.Connection) -> bool | None:
        """:meth:`activity_view`'s second half."""
        view = self.activity_view(conn)
        return None if view is None else view[1]

    def say_if_activity_hidden(self, what: str, log: logging.Logger) -> bool:
        """Log, as a warning, that ``what`` sees other roles' sessions only in part
        (:meth:`activity_view`). Whether that is settled (False: the database could not
        be read now; a backend that cannot tell has nothing to say); never raises."""
        try:
            with self.engine.connect() as conn:
                view = self.activity_view(conn)
        except sa.exc.SQLAlchemyError:
            return False
        if view is not None and not view[1]:
            role = view[0]
            log.warning(
                "the role %s may not read other roles' sessions (no pg_read_all_stats): %s "
                "sees them only while they hold a transaction open, and replication lag "
                "not at all; GRANT pg_read_all_stats TO %s for the full view",
                role,
                what,
                role,
            )
        return True

    def live_sessions_if_known(self, conn: sa.Connection, *, siblings: bool = False) -> int | None:
        """:meth:`live_sessions`, or None (unknown) when the server refuses to tell (a
        PostgreSQL-like server without ``pg_stat_activity.backend_type``, say): read it
        last in a transaction, as its failure spoils the transaction."""
        try:
            return self.live_sessions(conn, siblings=siblings)
        except sa.exc.DBAPIError:
            return None

    @contextmanager
    def locked_read(self) -> Iterator[sa.Connection]:
        """A read transaction that waits for in-flight writers of the rows it locks.

        Rows selected ``FOR SHARE`` in it wait for a writer holding them (PostgreSQL);
        SQLite has one lock for the whole file, taken up front here, so the transaction
        starts once the writer in flight has committed. Nothing is written.
        """
        with self.engine.connect() as conn:
            conn = self._prepare_write(conn)
            with conn.begin():
                yield conn
