"""Adapter operations inside the caller's transaction (``connection=``).

Writes on the caller's Connection or Session, never begins, commits or rolls back; the
mode is locked inside that transaction (PostgreSQL: only at READ COMMITTED); observers
hear of a write when that transaction ends (:mod:`unistatus.adapter.caller_end`). The design and the
SQLite rule (``BEGIN IMMEDIATE``): docs/adapter.md, "Inside the caller's transaction".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from unistatus.adapter.caller_connection import (
    CallerConnection,
    caller_connection,
    current_session,
    results_not_streamed,
)
from unistatus.adapter.caller_end import ROLLED_BACK, CallerWrite, Ending, track
from unistatus.adapter.caller_reach import CallerReach, bare_names
from unistatus.adapter.caller_session import SessionUnusable, expire_written
from unistatus.adapter.keys import KeyTaken
from unistatus.adapter.model import DualWriteResult, ModeChanged, Relinked, WriteLost
from unistatus.adapter.operation_connection import holding
from unistatus.adapter.runner import Runner, Work, failed_result
from unistatus.db.binding import bound_connection
from unistatus.db.dialect import DialectOps
from unistatus.db.failures import (
    describe,
    read_on_pool,
    refused_because,
    session_settings_named,
)
from unistatus.db.legacy import LegacyTable
from unistatus.db.mode_lock_keys import locked_mode_function
from unistatus.db.mode_reads import read_mode
from unistatus.db.prepared import Prepared
from unistatus.db.retry import refused_by_application, retry_reason, sqlstate_of
from unistatus.db.tables import migration_control
from unistatus.db.transaction_state import (
    transaction_failed,
)
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import (
    CallerKeyTakenError,
    CallerTransactionError,
    CallerWriteRefusedError,
    InputError,
    StorageError,
    UnistatusError,
)

__all__ = [
    "ROLLED_BACK",
    "CallerConnection",
    "CallerFast",
    "CallerTransactions",
    "caller_connection",
]

# The fast path on the caller's connection: None means "take the locked path".
CallerFast = Callable[[sa.Connection, DualWriteMode, str], DualWriteResult | None]
T = TypeVar("T")


class CallerTransactions:
    """Runs one adapter's operations in callers' transactions (see the module)."""

    def __init__(
        self,
        runner: Runner,
        ops: DialectOps,
        engine: sa.Engine,
        *,
        locked_mode: bool,
        legacy: Callable[[], Mapping[LegacySystemType, LegacyTable]] = dict,
    ) -> None:
        self.runner = runner
        self.ops = ops
        self.engine = engine
        # The legacy tables as the adapter has them now (a retirement's undo reloads
        # them): their rows a caller's Session holds are expired once written.
        self.legacy = legacy
        # The driver's own error root: nothing of it (nor of SQLAlchemy) leaves.
        self.driver_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        # The database and tables the adapter's own connections reach: a caller's
        # connection that reaches others is refused.
        names = bare_names([lt.table for lt in legacy().values()], ops.schema, engine.dialect)
        try:
            self.reach = CallerReach(engine, names)
        except sa.exc.DBAPIError as exc:
            raise StorageError(f"the adapter cannot start: {describe(exc)}") from None
        # ``unistatus_locked_mode(system)`` (revision 0015): the locks and the read of
        # the system's mode in one call.
        self._locked_mode = (
            {
                s: Prepared(sa.select(locked_mode_function(ops.schema, s)), engine)
                for s in LegacySystemType
            }
            if locked_mode
            else None
        )

    def write(
        self,
        operation: str,
        target: object,
        work: Work,
        fast: CallerFast | None = None,
        undo: Callable[[], None] | None = None,
        *,
        system: LegacySystemType | Callable[[sa.Connection], LegacySystemType],
    ) -> DualWriteResult:
        """``work`` on the caller's connection, under the mode of ``system`` (the
        entity's; a function of the caller's connection when it must be looked up
        there) locked there.

        ``fast`` (if given) is tried first: the guarded one-statement change of
        :mod:`unistatus.adapter.fast` on the caller's connection, planned under the mode
        as last read by this adapter; the statement takes the mode lock and checks the
        mode itself, and writes nothing when anything moved (None: ``work`` then runs,
        and its read of the mode corrects the guess for the next call). ``undo`` is
        called if the caller's transaction (or a savepoint of it) undoes the write.
        """
        started = time.perf_counter()
        target = current_session(target)  # its rows expired after the write, as a Session's
        try:
            conn = caller_connection(target, self.ops.name, self.legacy().values())
        except SessionUnusable as unusable:
            raise self._unusable(operation, unusable, started, system) from None
        if conn.invalidated or transaction_failed(conn):
            # The caller's own statement failed before this call: its error, not ours.
            why = (
                "its connection was invalidated (lost, or invalidate())"
                if conn.invalidated
                else "has already failed (a statement before this call failed)"
            )
            refused = CallerTransactionError(
                f"{operation}: the caller's transaction {why}; it can only be rolled back, "
                "nothing was written"
            )
            known = system if isinstance(system, LegacySystemType) else None
            mode = self.runner.last_modes[known] if known else self.runner.last_mode
            self.runner.emit(
                operation, mode, True, started, refused=True, error=str(refused), system=known
            )
            raise refused
        known = system if isinstance(system, LegacySystemType) else None
        try:
            # Our tables in our schema on the caller's connection, its results not
            # streamed (a server-side cursor takes no INSERT), for this call only.
            with bound_connection(conn, self.ops.schema), results_not_streamed(conn):
                self._require_reach(conn, operation, started, known)
                if not isinstance(system, LegacySystemType):
                    system = known = self._system_of(conn, operation, system, started)
                mode, result = self._write(operation, conn, work, fast, started, system)
        except UnistatusError:
            raise  # observed where it was raised
        except BaseException as exc:
            self._interrupted(conn, operation, exc, started, undo, known)
            raise
        self._wait_for_end(conn, operation, mode, result, undo, system)
        lt = self.legacy().get(system)
        if isinstance(target, Session) and lt is not None and result.legacy_entity_id:
            expire_written(target, lt, result.legacy_entity_id, conn)
        return result

    def _system_of(
        self,
        conn: sa.Connection,
        operation: str,
        look_up: Callable[[sa.Connection], LegacySystemType],
        started: float,
    ) -> LegacySystemType:
        """The entity's system, looked up on the caller's connection (a transaction born
        unified in the caller's own transaction is seen there only)."""
        try:
            return look_up(conn)
        except (sa.exc.SQLAlchemyError, self.driver_error) as exc:
            error = f"cannot look the transaction up: {describe(exc)}"
            mode = self.runner.last_mode
            raise self._failed(
                operation, str(uuid.uuid4()), mode, error, started, None, exc
            ) from None

    def _require_reach(
        self,
        conn: sa.Connection,
        operation: str,
        started: float,
        system: LegacySystemType | None,
    ) -> None:
        """Refuse (observed as refused) a caller's connection that does not reach the
        adapter's database and tables, or whose transaction it cannot write in; its
        failure to answer is the database's (observed as failed)."""
        mode = self.runner.last_modes[system] if system else self.runner.last_mode
        try:
            self.reach.require(conn)
        except (sa.exc.SQLAlchemyError, self.driver_error) as exc:  # a lost connection
            error = f"cannot read the caller's database and transaction: {describe(exc)}"
            raise self._failed(
                operation, str(uuid.uuid4()), mode, error, started, system, exc
            ) from None
        except (CallerTransactionError, InputError) as refused:
            self.runner.emit(
                operation, mode, True, started, refused=True, error=str(refused), system=system
            )
            raise

    def _write(
        self,
        operation: str,
        conn: sa.Connection,
        work: Work,
        fast: CallerFast | None,
        started: float,
        system: LegacySystemType,
    ) -> tuple[DualWriteMode, DualWriteResult]:
        """The write, and the mode it ran under."""
        op_id = str(uuid.uuid4())
        mode = self.runner.last_modes[system]
        unmarked = False
        try:
            # A session setting of the caller's connection, not the database's failure.
            with session_settings_named(), holding(conn):
                result = None
                if fast is not None:
                    # The mode as last read, a guess the statement checks: no other
                    # connection is needed (the pool may be held by callers' transactions).
                    self.runner.prepare(mode)
                    result = fast(conn, mode, op_id)
                if result is None:
                    mode = self.lock_mode(conn, system)
                    if not self.ops.mode_lock_marks:
                        self.ops.mark_writer(conn)
                    self.runner.prepare(mode)
                    with self._undone_on_failure(conn):
                        try:
                            result = work(conn, mode, op_id)
                        except Relinked:
                            # Nothing written; the caller's transaction cannot start over, so
                            # the write runs again here and locks the new legacy row after the
                            # unified row it holds (against the adapter's order: a deadlock
                            # with a write that locked legacy first is a failed write, typed,
                            # nothing of it written).
                            result = work(conn, mode, op_id)
                # The caller's own SQL after this operation is not the adapter's.
                self.ops.unmark_writer(conn)
                unmarked = True
        except WriteLost as lost:
            error = f"connection lost: {describe(lost.error)}"
            raise self._failed(operation, op_id, mode, error, started, system) from None
        except KeyTaken:
            error = (
                f"{operation} in the caller's transaction: its idempotency key was taken by "
                "a concurrent call that committed; roll the transaction back and repeat the "
                "call to get that call's result"
            )
            self.runner.emit(
                operation, mode, True, started, refused=True, error=error, system=system
            )
            raise CallerKeyTakenError(error, failed_result(op_id, mode, error, started)) from None
        except ModeChanged:
            # The mode is read under its lock in a READ COMMITTED transaction (others
            # are refused above), so this is a guard's own race: the caller retries.
            error = "the mode changed under the caller's transaction; retry it"
            raise self._failed(operation, op_id, mode, error, started, system) from None
        except StorageError as exc:
            raise self._failed(operation, op_id, mode, str(exc), started, system) from None
        except UnistatusError:
            self.runner.emit(operation, mode, True, started, refused=True, system=system)
            raise
        except sa.exc.DBAPIError as exc:
            if refused_by_application(exc):
                raise self._refused(operation, op_id, mode, exc, started, system) from None
            raise self._failed(
                operation, op_id, mode, describe(exc), started, system, exc
            ) from None
        except (sa.exc.SQLAlchemyError, self.driver_error) as exc:
            raise self._failed(
                operation, op_id, mode, describe(exc), started, system, exc
            ) from None
        finally:
            if not unmarked:
                self._unmark(conn)
        result.duration_ms = (time.perf_counter() - started) * 1000
        return mode, result

    def _undone_on_failure(self, conn: sa.Connection) -> AbstractContextManager[object]:
        """SQLite: the work in a savepoint of the caller's transaction, rolled back if it
        fails. A failed statement aborts a PostgreSQL transaction (its COMMIT rolls back);
        SQLite's goes on, so a side written before a refused one (the unified side, written
        first) would commit alone if the caller committed after the error. The mode lock,
        taken before, has begun the transaction (a savepoint outside one would commit at
        its release)."""
        return conn.begin_nested() if self.ops.name == "sqlite" else nullcontext()

    def _unmark(self, conn: sa.Connection) -> None:
        """The writer mark off again after a failed or refused operation (best effort:
        a transaction the database aborted is the caller's to roll back anyway); the
        caller's own SQL after the operation is then captured like any writer's."""
        try:
            self.ops.unmark_writer(conn)
        except (sa.exc.SQLAlchemyError, self.driver_error):
            pass

    def read(self, target: object | None, what: str, read: Callable[[sa.Connection], T]) -> T:
        """``read`` in the caller's transaction (its failures as CallerTransactionError),
        else on a connection of the pool (once more on a fresh one if the server dropped
        it: ``read_on_pool``; failures as StorageError)."""
        if target is None:
            return read_on_pool(self.engine, what, read, self.driver_error)
        try:
            conn = caller_connection(target, self.ops.name, self.legacy().values())
        except SessionUnusable as unusable:
            raise CallerTransactionError(f"{what}: {unusable}") from None
        try:
            with (
                session_settings_named(),
                bound_connection(conn, self.ops.schema),
                results_not_streamed(conn),
            ):
                self.reach.require(conn, writing=False)
                return read(conn)
        except (sa.exc.SQLAlchemyError, self.driver_error) as exc:
            raise CallerTransactionError(f"{what}: {describe(exc)}") from None

    def lock_mode(self, conn: sa.Connection, system: LegacySystemType) -> DualWriteMode:
        """Lock ``system``'s mode in the caller's transaction, then read it (see the
        module)."""
        if self._locked_mode is not None:
            mode = DualWriteMode(self._locked_mode[system].rows(conn, {})[0][0])
            self.runner.last_modes[system] = mode
            return mode
        if self.ops.mode_shared_lock_statement(system) is not None:
            self.ops.mode_shared_lock(conn, system)
        else:
            try:
                # A write that matches nothing: SQLite's write lock, until the caller ends.
                conn.execute(
                    sa.update(migration_control)
                    .where(sa.false())
                    .values(key=migration_control.c.key)
                )
            except sa.exc.OperationalError as exc:
                busy = getattr(exc.orig, "sqlite_errorname", "") == "SQLITE_BUSY"
                raise StorageError(
                    f"cannot take the write lock in the caller's transaction "
                    f"({describe(exc)}); "
                    + (
                        "another writer held it past the busy timeout of the application's "
                        "engine: give it a longer one (connect_args={'timeout': 30})"
                        if busy
                        else "begin it with BEGIN IMMEDIATE: on an engine of "
                        "unistatus.db.engine.create_engine, conn.execution_options("
                        "sqlite_begin='IMMEDIATE'); on the application's own, SQLAlchemy's "
                        "pysqlite recipe (docs/adapter.md, 'Inside the caller's transaction')"
                    )
                ) from None
        mode = self.runner.last_modes[system] = read_mode(conn, system)
        return mode

    def _failed(
        self,
        operation: str,
        op_id: str,
        mode: DualWriteMode,
        error: str,
        started: float,
        system: LegacySystemType | None,
        cause: BaseException | None = None,
    ) -> CallerTransactionError:
        """The failure (of the database's ``cause``, if known), observed now: the
        caller's transaction must be rolled back; said retryable where it lost a race."""
        race = retry_reason(cause) if cause is not None else None
        again = f" ({race}: roll it back and run the transaction again)" if race else ""
        error = f"{operation} failed in the caller's transaction (roll it back): {error}{again}"
        self.runner.emit(
            operation, mode, False, started, error=error, system=system, error_kind="database"
        )
        return CallerTransactionError(
            error,
            failed_result(op_id, mode, error, started),
            sqlstate=sqlstate_of(cause) if cause is not None else None,
            retryable=race is not None,
        )

    def _unusable(
        self,
        operation: str,
        unusable: SessionUnusable,
        started: float,
        system: LegacySystemType | Callable[[sa.Connection], LegacySystemType],
    ) -> CallerTransactionError:
        """The caller's Session gave no connection, observed now: a failure where the
        database failed, a refusal where it refused the caller's own rows."""
        known = system if isinstance(system, LegacySystemType) else None
        mode = self.runner.last_modes[known] if known else self.runner.last_mode
        op_id = str(uuid.uuid4())
        if unusable.database:
            return self._failed(operation, op_id, mode, str(unusable), started, known)
        error = f"{operation} in the caller's transaction (roll it back): {unusable}"
        self.runner.emit(operation, mode, True, started, refused=True, error=error, system=known)
        return CallerTransactionError(error, failed_result(op_id, mode, error, started))

    def _refused(
        self,
        operation: str,
        op_id: str,
        mode: DualWriteMode,
        exc: sa.exc.DBAPIError,
        started: float,
        system: LegacySystemType,
    ) -> CallerWriteRefusedError:
        """The application's rule refused the write, observed now as a refusal: the
        caller's transaction must be rolled back."""
        error = refused_because(f"{operation} in the caller's transaction (roll it back)", exc)
        self.runner.emit(operation, mode, True, started, refused=True, error=error, system=system)
        return CallerWriteRefusedError(error, failed_result(op_id, mode, error, started))

    # --- observers once the caller's transaction ends ---------------------------------

    def _interrupted(
        self,
        conn: sa.Connection,
        operation: str,
        exc: BaseException,
        started: float,
        undo: Callable[[], None] | None,
        system: LegacySystemType | None,
    ) -> None:
        """A write interrupted by ``exc`` (asyncio's CancelledError when a request times
        out in ``run_sync``, KeyboardInterrupt, a bug's exception): observed once the
        caller's transaction ends, like a write that returned. Rolled back (the usual
        end: the interruption unwinds the caller's ``with``/``async with``), it is a
        rolled-back write; committed anyway, nobody knows what of it was done, so its
        outcome is unknown. A connection that can no longer be followed (closed under
        the interruption) took its transaction with it: rolled back, observed now."""
        mode = self.runner.last_modes[system] if system else self.runner.last_mode
        interrupted = f"{operation} interrupted by {type(exc).__name__} in the caller's transaction"
        duration_ms = (time.perf_counter() - started) * 1000
        emit: Callable[..., None] = self.runner.emit

        def end(ending: Ending) -> None:
            if ending.kept:
                error = (
                    f"outcome unknown: {interrupted}, which then committed what of the "
                    "write had been done before the interruption"
                )
                emit(
                    operation,
                    mode,
                    False,
                    0.0,
                    error=error,
                    outcome_unknown=True,
                    duration_ms=duration_ms,
                    system=system,
                )
                return
            emit(
                operation,
                mode,
                False,
                0.0,
                error=f"{ending.error} ({interrupted})",
                rolled_back=not ending.outcome_unknown,
                outcome_unknown=ending.outcome_unknown,
                duration_ms=duration_ms,
                system=system,
            )

        if not self.runner.observers and undo is None:
            return
        try:
            # A connection dropped by the interruption (left mid-command) lost its
            # transaction with it: rolled back by the server.
            open_transaction = conn.in_transaction() and not conn.invalidated
        except sa.exc.SQLAlchemyError:
            open_transaction = False
        if open_transaction:
            track(conn, CallerWrite(end, undo))
        else:
            if undo is not None:
                undo()
            end(Ending(False, ROLLED_BACK))

    def _wait_for_end(
        self,
        conn: sa.Connection,
        operation: str,
        mode: DualWriteMode,
        result: DualWriteResult,
        undo: Callable[[], None] | None,
        system: LegacySystemType,
    ) -> None:
        """Observe the write once the caller's transaction has ended (:mod:`...caller_end`)."""
        if not self.runner.observers and undo is None:
            return
        emit: Callable[..., None] = self.runner.emit

        def end(ending: Ending) -> None:
            if ending.kept:
                emit(
                    operation,
                    mode,
                    result.overall_success,
                    0.0,
                    duration_ms=result.duration_ms,
                    system=system,
                )
                return
            emit(
                operation,
                mode,
                False,
                0.0,
                error=ending.error,
                rolled_back=not ending.outcome_unknown,
                outcome_unknown=ending.outcome_unknown,
                duration_ms=result.duration_ms,
                system=system,
            )

        track(conn, CallerWrite(end, undo))
