"""Running one adapter operation: admission, attempts, retries, giving up, observers.

:class:`Runner` admits a write through the fair gate (:mod:`unistatus.adapter.admission`),
tries the fast path and then the locked transaction, retries what may be retried
(a mode switch, a lost connection, a deadlock, a connection the server refused for a
limit: nothing was sent on it), turns every database failure into a
failed result (``outcome_unknown`` when it may have committed), and hands every
operation to the observers exactly once.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import sqlalchemy as sa

from unistatus.adapter.admission import FairGate
from unistatus.adapter.keys import KeyTaken
from unistatus.adapter.model import (
    DualWriteResult,
    ModeChanged,
    OperationEvent,
    Relinked,
    WriteLost,
)
from unistatus.adapter.operation_connection import holding
from unistatus.config import Settings
from unistatus.db.connection_limit import (
    connection_limit_error,
    pool_capacity,
    refused_for_a_limit,
)
from unistatus.db.dialect import DialectOps
from unistatus.db.failures import (
    describe,
    read_only_refusal,
    refused_because,
    session_settings_named,
    storage_errors,
)
from unistatus.db.mode_reads import DEFAULT_MODE
from unistatus.db.mode_watcher import ModeWatcher
from unistatus.db.retry import is_read_only, is_retryable, refused_by_application
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import (
    ConnectionLimitError,
    StorageError,
    UnistatusError,
    WriteRefusedError,
)

__all__ = ["CONNECTION_LIMIT", "MAX_ATTEMPTS", "Fast", "Runner", "Work", "failed_result"]

# The adapter's one logger: its messages kept their logger name through the split.
log = logging.getLogger("unistatus.adapter.core")
MAX_ATTEMPTS = 4
# The error kind (OperationEvent.error_kind) of a write that failed because the server
# kept refusing connections for a limit: the database is up, the role's slots are full.
CONNECTION_LIMIT = "connection_limit"
# A refused connection is tried again after this (doubling, with jitter) up to the cap:
# a slot frees up when another session of the role ends (a few ms for a write's).
_LIMIT_BACKOFF_SECONDS = 0.01
_LIMIT_BACKOFF_CAP_SECONDS = 0.25
# The locked path: the operation inside a write transaction, under a mode, with its id.
Work = Callable[[sa.Connection, DualWriteMode, str], DualWriteResult]
# The fast path: commits by itself; None means "take the locked path".
Fast = Callable[[DualWriteMode, str], DualWriteResult | None]


@dataclass
class _Progress:
    """Where a write stands, for its interruption: the mode it runs under, why its
    outcome is unknown (an earlier attempt's lost COMMIT), what of it that may
    commit is in flight (None: nothing), the result once it committed, and whether
    that result was handed to the observers (an interruption after either is no
    rollback, and no second event)."""

    mode: DualWriteMode
    unknown: str | None = None
    committing: str | None = None
    done: DualWriteResult | None = None
    emitted: bool = False


class Runner:
    """Runs the adapter's operations; owns its observers and the mode as last read.

    ``gate`` admits the writes (None: no limit), waiting at most
    ``settings.write_queue_timeout_seconds``; ``prepare(mode)`` runs before every attempt (the adapter picks up restored legacy
    columns there).
    """

    def __init__(
        self,
        ops: DialectOps,
        modes: ModeWatcher,
        driver_error: type[Exception],
        gate: FairGate | None,
        settings: Settings,
        prepare: Callable[[DualWriteMode], None],
    ) -> None:
        self.ops = ops
        self.modes = modes
        # The driver's own error root: nothing of it (nor of SQLAlchemy) leaves the adapter.
        self.driver_error = driver_error
        self.gate = gate
        self.settings = settings
        self.prepare = prepare
        # Each system's mode as last read: what a failure is filed under when it cannot
        # be read (LEGACY_ONLY's stand-in for a system whose mode was never read).
        self.last_modes = dict.fromkeys(LegacySystemType, DEFAULT_MODE)
        self.modes_read: set[LegacySystemType] = set()
        self.observers: list[Callable[[OperationEvent], None]] = []
        # What this process's pool may open, for a refusal's message (None: unbounded).
        self.pool = pool_capacity(ops.engine)

    def storage_errors(self, what: str) -> AbstractContextManager[None]:
        """SQLAlchemy's and the driver's errors as StorageError: ``what`` and the cause."""
        return storage_errors(what, self.driver_error)

    def mode(self, system: LegacySystemType | None = None) -> DualWriteMode:
        """``system``'s current mode (re-read when stale; None: the mode of every
        system, ModeError if they differ); StorageError if it cannot be read."""
        with self.storage_errors("cannot read the mode"):
            modes = self.modes.modes()
        self.last_modes.update(modes)
        self.modes_read.update(modes)
        return modes[system] if system is not None else self.modes.get()

    @property
    def last_mode(self) -> DualWriteMode:
        """The mode as last read, of every system while they agree (else LEGACY_ONLY's
        stand-in: the first system's), for what is filed under no system."""
        return next(iter(self.last_modes.values()))

    def run(
        self,
        operation: str,
        work: Work,
        fast: Fast | None = None,
        settle: Callable[[], bool] | None = None,
        *,
        system: LegacySystemType,
    ) -> DualWriteResult:
        """Run ``work`` in a write transaction under ``system``'s mode (the entity's),
        retrying what may be retried.

        ``fast`` (if given) is tried first on every attempt: the two-round-trip path
        (:mod:`unistatus.adapter.fast`); None from it means "take the locked path".
        It commits by itself, guarded: if its connection is lost mid-write the outcome
        is unknown until a retry, which reads again, settles it (see :meth:`_attempts`).
        ``settle`` (if given) is called when a COMMIT's reply was lost and says whether
        a retry can tell what happened (a keyed create: :mod:`unistatus.adapter.keys`).

        At most ``settings.write_concurrency`` writes of this adapter run at once; the
        others queue in arrival order (:class:`unistatus.adapter.admission.FairGate`), at most
        ``settings.write_queue_timeout_seconds``.
        """
        started = time.perf_counter()
        op_id = str(uuid.uuid4())
        gate = self.gate
        if gate is None:
            return self._attempts(operation, work, fast, started, op_id, settle, system)
        # The slots this thread holds before: one more in ``finally`` is this write's,
        # given back even if an interruption landed between ``acquire`` handing it
        # over and the write holding it (else it would be lost for good).
        held = gate.held()
        try:
            try:
                admitted = gate.acquire(self.settings.write_queue_timeout_seconds)
            except BaseException as exc:  # interrupted in the queue: nothing written
                progress = _Progress(self.last_modes[system])
                self._interrupted(operation, exc, progress, started, system)
                raise
            if not admitted:
                error = (
                    f"no write slot within {self.settings.write_queue_timeout_seconds:g}s: "
                    f"{gate.slots} writes in flight, {gate.waiting} queued (the database is "
                    "slow or unreachable; see `unistatus diagnose`)"
                )
                mode = self.last_modes[system]
                return self._give_up(
                    operation, op_id, mode, error, None, started, system, "queue_timeout"
                )
            return self._attempts(operation, work, fast, started, op_id, settle, system)
        finally:
            if gate.held() > held:
                gate.release()

    def _attempts(
        self,
        operation: str,
        work: Work,
        fast: Fast | None,
        started: float,
        op_id: str,
        settle: Callable[[], bool] | None,
        system: LegacySystemType,
    ) -> DualWriteResult:
        """The attempt loop (:meth:`_attempt_loop`), and its interruption: a
        BaseException (KeyboardInterrupt, SystemExit, asyncio's CancelledError when an
        async application runs the adapter in a thread) or a bug's exception, observed
        once and raised unchanged. The connection is back in the pool (its transaction
        rolled back) and the write slot free by then: ``with`` blocks let go of them."""
        progress = _Progress(self.last_modes[system])
        try:
            return self._attempt_loop(
                operation, work, fast, started, op_id, settle, system, progress
            )
        except UnistatusError:
            raise  # a refusal: observed where it was raised
        except BaseException as exc:
            self._interrupted(operation, exc, progress, started, system)
            raise

    def _interrupted(
        self,
        operation: str,
        exc: BaseException,
        progress: _Progress,
        started: float,
        system: LegacySystemType,
    ) -> None:
        """A failure event for a write interrupted by ``exc``: outcome unknown if it was
        interrupted while something of it could commit (the fast path's autocommit
        statement, a COMMIT) or after an attempt whose outcome was unknown already.

        A write that committed is no failure: interrupted while its own event was
        handed to the observers (one of them raised ``exc``), or after, nothing more is
        observed; interrupted between its commit and that event, the event is handed
        over now (then ``exc`` goes on)."""
        interrupted = f"interrupted by {type(exc).__name__}"
        if progress.emitted:
            log.warning("%s committed, then %s", operation, interrupted)
            return
        if progress.done is not None:
            progress.emitted = True
            done = progress.done
            self.emit(operation, progress.mode, done.overall_success, started, system=system)
            log.warning("%s committed, then %s", operation, interrupted)
            return
        unknown = progress.unknown
        if progress.committing is not None:
            unknown = unknown or f"{interrupted} during {progress.committing}"
        if unknown is not None:
            error = f"outcome unknown, it may have committed ({unknown})"
            if interrupted not in unknown:
                error += f"; then {interrupted}"
        else:
            error = f"{interrupted}: rolled back, nothing written"
        self.emit(
            operation,
            progress.mode,
            False,
            started,
            error=error,
            outcome_unknown=unknown is not None,
            system=system,
            error_kind="outcome_unknown" if unknown is not None else "interrupted",
        )
        log.error("%s failed: %s", operation, error)

    def _attempt_loop(
        self,
        operation: str,
        work: Work,
        fast: Fast | None,
        started: float,
        op_id: str,
        settle: Callable[[], bool] | None,
        system: LegacySystemType,
        progress: _Progress,
    ) -> DualWriteResult:
        """The attempt loop. Every way it ends reaches the observers exactly once: a
        result (success or failure) is returned, a refusal (bad input, a forbidden
        transition, a mode that does not allow the write) is raised. ``progress``
        follows it for an interruption (:meth:`_attempts`).

        Once an attempt may have committed (its connection lost during COMMIT, or during
        an autocommit write of the fast path), the outcome stays unknown unless a later
        attempt succeeds: failures and refusals after it say "outcome unknown". A lost
        COMMIT is retried only when ``settle()`` says the retry can tell (a create with
        an idempotency key looks its key up first); a fast-path write is re-planned from
        a fresh read, under the same guards, so a change already applied is a no-op.
        """
        unknown: str | None = None
        last_error: str | None = None
        kind: str | None = None
        refusals = 0  # connections refused for a limit: retried within the write's time
        try:
            mode, refusals = self._read_mode(system, started, refusals)
            progress.mode = mode
        except ConnectionLimitError as exc:
            mode, last_error = self.last_modes[system], self._limit_message(exc)
            return self._give_up(
                operation, op_id, mode, last_error, unknown, started, system, CONNECTION_LIMIT
            )
        except StorageError as exc:
            mode, last_error = self.last_modes[system], str(exc)
            return self._give_up(operation, op_id, mode, last_error, unknown, started, system)
        attempt = -1
        while True:
            attempt += 1
            if attempt >= MAX_ATTEMPTS:
                break
            committing = False
            retry = False
            limited: BaseException | None = None
            kind = None  # this attempt's failure, as labelled (OperationEvent.error_kind)
            try:
                try:
                    with session_settings_named():  # the connection's, not the database's
                        self.prepare(mode)
                        done = None
                        if fast is not None:
                            progress.committing = "the fast path's autocommit write"
                            done = progress.done = fast(mode, op_id)
                            progress.committing = None
                        if done is not None:
                            result = done
                        else:
                            # Every path of ``work`` takes the mode lock before it writes.
                            with (
                                self.ops.write_transaction(mode_locked=True) as conn,
                                holding(conn),
                            ):
                                result = work(conn, mode, op_id)
                                committing = True
                                progress.committing = "COMMIT"
                            progress.done = result  # committed
                            progress.committing = None
                except Exception:
                    progress.committing = None  # the attempt failed: nothing of it in flight
                    raise
                result.duration_ms = (time.perf_counter() - started) * 1000
                # Marked first: an observer that raises KeyboardInterrupt has seen it.
                progress.emitted = True
                self.emit(operation, mode, result.overall_success, started, system=system)
                return result
            except KeyTaken:
                continue  # nothing written: the next attempt returns the stored result
            except Relinked:
                continue  # nothing written: the next attempt locks the new legacy row first
            except ModeChanged:
                try:
                    mode, refusals = self._read_mode(system, started, refusals, fresh=True)
                    progress.mode = mode
                except StorageError as exc:
                    last_error = str(exc)
                    if isinstance(exc, ConnectionLimitError):
                        last_error, kind = self._limit_message(exc), CONNECTION_LIMIT
                    break
                continue
            except WriteLost as lost:
                last_error = describe(lost.error)
                unknown = progress.unknown = (
                    unknown or f"connection lost during the write: {last_error}"
                )
                retry = True
            except ConnectionLimitError as exc:  # refused at connect: nothing was sent
                limited = exc
            except StorageError as exc:  # the database, not the caller
                last_error = str(exc)
                break
            except UnistatusError as exc:
                if unknown is not None:
                    # A retry refused on what the lost attempt may have written.
                    last_error = f"the retry was refused: {exc}"
                    break
                self.emit(operation, mode, True, started, refused=True, system=system)
                raise
            except sa.exc.DBAPIError as exc:
                if refused_for_a_limit(exc):  # refused at connect: nothing was sent
                    limited = exc
                    retry = True
                # A replica refuses every write: say so, and where writes go.
                last_error = (
                    read_only_refusal(exc, who="the writes") if is_read_only(exc) else describe(exc)
                )
                if limited is None and refused_by_application(exc):
                    if unknown is not None:
                        last_error = f"the retry was refused: {last_error}"
                        break
                    self.emit(operation, mode, True, started, refused=True, system=system)
                    refused = refused_because(operation, exc)
                    raise WriteRefusedError(f"{refused}; nothing written") from None
                if limited is not None:
                    pass  # retried below, within the write's time
                elif committing and exc.connection_invalidated:
                    # Lost during COMMIT: it may or may not have committed. Retried only
                    # where the retry can tell (a second create would duplicate).
                    unknown = progress.unknown = (
                        unknown or f"connection lost during commit: {last_error}"
                    )
                    retry = settle is not None and settle()
                else:
                    # A connection lost before COMMIT rolled back: retry on a fresh one.
                    retry = is_retryable(exc) or exc.connection_invalidated
            except (sa.exc.SQLAlchemyError, self.driver_error) as exc:
                # Pool timeouts, a connection closed under us, ...: never raw to the caller.
                last_error = describe(exc)
                break
            if limited is not None:
                last_error, kind = self._limit_message(limited), CONNECTION_LIMIT
                if not self._slot_may_free(refusals, started):
                    break
                refusals += 1
                attempt -= 1  # not an attempt: nothing of it reached the server
                continue
            if not retry or attempt + 1 >= MAX_ATTEMPTS:
                break
            time.sleep(0.005 * (attempt + 1) * (1 + random.random()))
        error = last_error or "mode kept changing; retry"
        return self._give_up(operation, op_id, mode, error, unknown, started, system, kind)

    def _read_mode(
        self, system: LegacySystemType, started: float, refusals: int, *, fresh: bool = False
    ) -> tuple[DualWriteMode, int]:
        """``system``'s mode (``fresh``: re-read now, after a mode change) and the
        write's refusals so far: a connection refused for a limit is tried again like an
        attempt's (:meth:`_slot_may_free`), ConnectionLimitError once the write's time is
        up; any other failure to read it a StorageError."""
        while True:
            try:
                if not fresh:
                    return self.mode(system), refusals
                with self.storage_errors("cannot read the mode"):
                    mode = self.last_modes[system] = self.modes.refresh(system)
                return mode, refusals
            except ConnectionLimitError:
                if not self._slot_may_free(refusals, started):
                    raise
                refusals += 1

    def _slot_may_free(self, refusals: int, started: float) -> bool:
        """After a connection refused for a limit: wait a short backoff and say True,
        while the write's time allows it (``write_queue_timeout_seconds`` since it was
        called, the time it may already wait for a write slot); else False at once."""
        backoff = min(_LIMIT_BACKOFF_SECONDS * 2**refusals, _LIMIT_BACKOFF_CAP_SECONDS)
        backoff *= 0.5 + random.random() / 2  # writers refused together retry apart
        budget = self.settings.write_queue_timeout_seconds
        if time.perf_counter() + backoff - started > budget:
            return False
        time.sleep(backoff)
        return True

    def _limit_message(self, exc: BaseException) -> str:
        """A connection refused for a limit, as the write's error: the server's words,
        the limits it may be, and what this process's pool may open."""
        if isinstance(exc, ConnectionLimitError):
            text = str(exc)
            if exc.pool is None and self.pool is not None:
                text += f"; unistatus's pool for this process may open up to {self.pool}"
            return text
        return str(connection_limit_error(None, exc, self.pool))

    def _give_up(
        self,
        operation: str,
        op_id: str,
        mode: DualWriteMode,
        error: str,
        unknown: str | None,
        started: float,
        system: LegacySystemType | None = None,
        kind: str | None = None,
    ) -> DualWriteResult:
        """The failed result, observed and logged; outcome unknown if ``unknown`` says why.
        ``kind`` labels the failure (OperationEvent.error_kind; None: "database"), unless
        the outcome is unknown."""
        if unknown is not None:
            then = "" if error in unknown else f"; then: {error}"
            error = f"outcome unknown, it may have committed ({unknown}){then}"
        self.emit(
            operation,
            mode,
            False,
            started,
            error=error,
            outcome_unknown=bool(unknown),
            system=system,
            # A write that may have committed is that first, whatever refused its retry.
            error_kind="outcome_unknown" if unknown else (kind or "database"),
        )
        read = system is None or system in self.modes_read
        where = mode.value if read else "a mode not read yet"
        log.error("%s failed in %s: %s", operation, where, error)
        result = failed_result(op_id, mode, error, started)
        result.outcome_unknown = unknown is not None
        return result

    def emit(
        self,
        operation: str,
        mode: DualWriteMode,
        success: bool,
        started: float,
        *,
        shadow_mismatch: bool = False,
        error: str | None = None,
        refused: bool = False,
        outcome_unknown: bool = False,
        rolled_back: bool = False,
        duration_ms: float | None = None,
        system: LegacySystemType | None = None,
        error_kind: str | None = None,
    ) -> None:
        """Hand the operation to every observer (one that fails is logged, not raised).

        ``duration_ms`` (default: since ``started``) is given for an event handed over
        later than the operation ended (after the caller's commit).
        """
        if not self.observers:
            return
        event = OperationEvent(
            operation,
            mode,
            success,
            (time.perf_counter() - started) * 1000 if duration_ms is None else duration_ms,
            shadow_mismatch,
            error,
            refused=refused,
            outcome_unknown=outcome_unknown,
            rolled_back=rolled_back,
            system=system,
            # A write that may have committed is that first (a caller's, said unlabelled).
            error_kind="outcome_unknown" if outcome_unknown else error_kind,
        )
        for observer in self.observers:
            try:
                observer(event)
            except Exception:  # an observer must never break a write
                log.exception("operation observer failed")


def failed_result(op_id: str, mode: DualWriteMode, error: str, started: float) -> DualWriteResult:
    """The result of a write that failed (nothing of it committed)."""
    return DualWriteResult(
        operation_id=op_id,
        entity_id=None,
        legacy_entity_id=None,
        mode=mode,
        primary_success=False,
        secondary_success=False,
        overall_success=False,
        error=error,
        duration_ms=(time.perf_counter() - started) * 1000,
        changed=False,
    )
