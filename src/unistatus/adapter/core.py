"""DualWriteAdapter: the one way the application writes transaction statuses.

Every write runs in one database transaction that (1) takes the mode lock shared, so a
mode switch waits for it, (2) locks the entity's row (the legacy row while legacy is
written, else the unified row), (3) checks the transition against the locked current
status, and (4) writes the sides the current mode asks for, plus one history row.
``strict`` fallback commits all of it or nothing; ``primary_wins`` runs the secondary
side in a savepoint and queues a repair if it fails.

On PostgreSQL the common status change takes a shorter way with the same guarantees
(:mod:`unistatus.adapter.fast`): one statement does (1) to (4), re-checking the state
it was planned from, and anything it cannot settle falls back to the transaction above.
At most ``settings.write_concurrency`` writes of an adapter run at once; the rest queue
in arrival order (:mod:`unistatus.adapter.admission`).

Bad input and refused changes raise (``UnistatusError``); database failures are returned
as failed results, ``outcome_unknown`` when the write may have committed; no SQLAlchemy
or driver exception leaves the adapter, and every operation reaches the observers once.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal
from enum import Enum
from typing import Any, Literal

import sqlalchemy as sa

from unistatus.adapter.admission import FairGate
from unistatus.adapter.fast import FastStatusWriter, has_locked_mode_function
from unistatus.adapter.keys import IdempotencyClaim, KeyTaken
from unistatus.adapter.model import (
    DualWriteResult,
    Entity,
    ModeChanged,
    OperationEvent,
    Plan,
    WriteLost,
)
from unistatus.adapter.sql import (
    HotStatements,
    legacy_select,
    legacy_status_column,
)
from unistatus.clock import utcnow
from unistatus.config import Settings, load_settings
from unistatus.db.control import DEFAULT_MODE, ModeWatcher, read_mode
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.db.failures import describe, storage_errors
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.tables import (
    pending_legacy_changes,
    repair_queue,
    status_history,
    unified_transactions,
)
from unistatus.domain import consistency
from unistatus.domain.ids import (
    EntityRef,
    LegacyRef,
    UtxId,
    derive_utx_id,
    new_unified_id,
    parse_entity_id,
)
from unistatus.domain.inputs import (
    MAX_ACTOR_CHARS,
    MAX_REASON_CHARS,
    check_amount,
    check_currency,
    check_metadata,
    check_text,
    check_user_id,
)
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import (
    DualWriteMode,
    LegacySystemType,
    UnifiedTransactionStatus,
    UnifiedTransactionType,
)
from unistatus.domain.transitions import TransitionKind, TransitionRules
from unistatus.errors import (
    EntityNotFoundError,
    InputError,
    InvalidStatusError,
    ModeError,
    StorageError,
    UnistatusError,
    UnmappableStatusError,
)

__all__ = ["DualWriteAdapter", "DualWriteResult", "Fallback", "OperationEvent"]

log = logging.getLogger("unistatus.adapter.core")
Fallback = Literal["strict", "primary_wins"]
MAX_ATTEMPTS = 4
U = unified_transactions


class DualWriteAdapter:
    """Writes statuses to the legacy tables and ``unified_transactions`` per the mode.

    ``database`` is a URL or a SQLAlchemy ``Engine``. The mode lives in the database and
    is re-read at most every ``settings.mode_refresh_seconds``.
    """

    def __init__(
        self,
        database: str | sa.Engine | None = None,
        *,
        fallback: Fallback | None = None,
        shadow_read_rate: float | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        fallback = fallback or self.settings.fallback
        if fallback not in ("strict", "primary_wins"):
            raise InputError(f"unknown fallback {fallback!r}: use 'strict' or 'primary_wins'")
        rate = self.settings.shadow_read_rate if shadow_read_rate is None else shadow_read_rate
        if not 0.0 <= rate <= 1.0:
            raise InputError(f"shadow_read_rate must be within 0..1, got {rate}")
        self.fallback: Fallback = fallback
        self.shadow_read_rate = rate
        self.engine = create_engine(
            database or self.settings.database_url, lock_timeout_ms=self.settings.lock_timeout_ms
        )
        self.ops = ops_for(self.engine)
        # The driver's own error root: nothing of it (nor of SQLAlchemy) leaves the adapter.
        self._driver_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        self.mapper = LegacyStatusMapper()
        self.rules = TransitionRules()
        self.modes = ModeWatcher(self.engine, self.settings.mode_refresh_seconds)
        # The mode as last read: what a failure is filed under when it cannot be read.
        self._last_mode = DEFAULT_MODE
        self.observers: list[Callable[[OperationEvent], None]] = []
        self.shadow_mismatches = 0
        with self._storage_errors("cannot reach the database"):
            # The status column may be gone after retirement: UNIFIED_ONLY still works,
            # and a write that needs legacy says so clearly (see legacy_status_column).
            self.legacy: dict[LegacySystemType, LegacyTable] = resolve_legacy_tables(
                self.engine, self.settings, require_status=False
            )
            # Status changes in one or two round trips where the database allows
            # (PostgreSQL with revision 0007); otherwise, and whenever it declines, the
            # locked path.
            self.locked_mode = self._fast_path_available()
        # Hot-path statements, built once per legacy system and compiled once.
        self.hot = self._hot_statements()
        self.fast = (
            FastStatusWriter(self, self.settings.state_cache_size) if self.locked_mode else None
        )
        slots = self.settings.write_concurrency
        if slots is None:
            slots = self.ops.default_write_concurrency
        self.gate = FairGate(slots) if slots else None

    # --- public API -----------------------------------------------------------------

    @property
    def mode(self) -> DualWriteMode:
        """The current mode (re-read when stale); StorageError if it cannot be read."""
        with self._storage_errors("cannot read the mode"):
            mode = self._last_mode = self.modes.get()
        return mode

    def create_transaction(
        self,
        transaction_type: UnifiedTransactionType | str,
        user_id: int,
        amount: Decimal | int | str,
        currency: str,
        legacy_entity_id: int | None = None,
        status: object | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        triggered_by: str = "create_transaction",
    ) -> DualWriteResult:
        """Create a transaction on the sides the mode writes (or link an existing legacy row).

        With ``idempotency_key``, a repeated call with the same key and arguments returns
        the first call's result (``replayed=True``) instead of writing again, also after
        an outcome-unknown result and when the calls race; the same key with other
        arguments is an InputError (:mod:`unistatus.adapter.keys`). ``triggered_by``
        names who created it in the first history row.
        """
        ttype = _parse_type(transaction_type)
        system = ttype.legacy_system
        fields = {
            "user_id": check_user_id(user_id),
            "amount": check_amount(amount, self.ops.exact_numeric_digits),
            "currency": check_currency(currency),
        }
        check_metadata(metadata)
        check_text("triggered_by", triggered_by, MAX_ACTOR_CHARS)
        dst, explicit_legacy = self._target(ttype, status or UnifiedTransactionStatus.PENDING)
        dst_legacy = explicit_legacy or self.mapper.to_legacy(ttype, dst)
        ref = LegacyRef(system, legacy_entity_id) if legacy_entity_id is not None else None
        claim = None
        if idempotency_key is not None:
            arguments = {
                "transaction_type": ttype,
                "legacy_entity_id": legacy_entity_id,
                "status": dst,
                "legacy_status": dst_legacy,
                "metadata": metadata,
                **fields,
            }
            claim = IdempotencyClaim.of(idempotency_key, arguments)

        def create(conn: sa.Connection, mode: DualWriteMode, op_id: str) -> DualWriteResult:
            if ref is None and self.ops.supports_dml_cte and mode.writes_legacy:
                return self._create_in_one_statement(
                    conn,
                    mode,
                    op_id,
                    system,
                    fields,
                    dst,
                    dst_legacy,
                    metadata,
                    triggered_by,
                    claim,
                )
            entity = self._lock(conn, ref, mode) if ref else None
            if entity is None or entity.legacy is None and entity.unified is None:
                self._confirm_mode(conn, mode, locked=ref is not None)
                result = self._create_new(
                    conn, mode, op_id, system, ref, fields, dst, dst_legacy, metadata, triggered_by
                )
            else:
                result = self._link_existing(
                    conn, mode, op_id, entity, fields, metadata, triggered_by
                )
            if claim is not None:
                claim.store(conn, result)
            return result

        def work(conn: sa.Connection, mode: DualWriteMode, op_id: str) -> DualWriteResult:
            if claim is None:
                return create(conn, mode, op_id)
            if claim.look_first:
                replayed = claim.replay(conn)
                if replayed is not None:
                    return replayed
            try:
                return create(conn, mode, op_id)
            except sa.exc.IntegrityError as exc:
                if not claim.taken(exc):
                    raise
                claim.look_first = True
                raise KeyTaken from None

        return self._run("create_transaction", work, settle=claim.settle if claim else None)

    def update_status(
        self,
        entity_id: object,
        new_status: object,
        reason: str,
        triggered_by: str,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
    ) -> DualWriteResult:
        """Change a transaction's status; ``new_status`` may be unified or legacy."""
        ref = parse_entity_id(entity_id)
        if not isinstance(triggered_by, str) or not triggered_by.strip():
            raise InputError("triggered_by is required (who or what made this change)")
        check_text("triggered_by", triggered_by, MAX_ACTOR_CHARS)
        check_text("reason", reason, MAX_REASON_CHARS, required=False)
        check_metadata(metadata)
        if new_status is None:
            raise InputError("new_status is required")

        def work(conn: sa.Connection, mode: DualWriteMode, op_id: str) -> DualWriteResult:
            entity = self._lock(conn, ref, mode)
            if entity.legacy is None and entity.unified is None:
                raise EntityNotFoundError(str(entity_id))
            try:
                plan = self._plan(entity, mode, new_status, reason, triggered_by, metadata, force)
            except UnistatusError:
                # Judged under a mode that may just have changed: only refuse for real.
                self._confirm_mode(conn, mode, locked=True)
                raise
            plan.operation_id = op_id
            return self._apply(conn, plan)

        fast = self.fast

        def fast_work(mode: DualWriteMode, op_id: str) -> DualWriteResult | None:
            assert fast is not None
            plan = fast.update(
                ref,
                mode,
                op_id,
                lambda e: self._plan(e, mode, new_status, reason, triggered_by, metadata, force),
            )
            return None if plan is None else self._result(plan)

        return self._run("update_status", work, fast_work if fast is not None else None)

    def get_transaction_status(
        self, entity_id: object
    ) -> tuple[UnifiedTransactionStatus | None, dict[str, Any]]:
        """The status from the authoritative side, with ``metadata['source']``."""
        started = time.perf_counter()
        ref = parse_entity_id(entity_id)
        mode = self._last_mode
        mismatch = False
        try:
            mode = self.mode
            with self._storage_errors(f"cannot read {entity_id}"):
                with self.engine.connect() as conn:
                    entity = self._read(conn, ref)
        except StorageError as exc:
            self._emit("get_transaction_status", mode, False, started, error=str(exc))
            raise
        meta: dict[str, Any] = {"entity_id": str(entity_id), "mode": mode.value}
        if entity.legacy is None and entity.unified is None:
            self._emit("get_transaction_status", mode, True, started)
            return None, {**meta, "source": None, "error": "not found"}
        use_unified = entity.unified is not None and (mode.reads_unified or entity.legacy is None)
        if use_unified:
            assert entity.unified is not None
            status: UnifiedTransactionStatus | None = UnifiedTransactionStatus(
                entity.unified["status"]
            )
            meta.update(source="unified", legacy_status=entity.unified["legacy_status"])
        else:
            assert entity.legacy is not None
            status = self.mapper.try_to_unified(entity.system, entity.legacy["status"])
            meta.update(source="legacy", legacy_status=entity.legacy["status"])
            if status is None:
                meta["error"] = f"unmappable legacy status {entity.legacy['status']!r}"
        meta.update(
            transaction_id=entity.utx_id if entity.legacy_id or entity.unified else None,
            legacy_system=entity.system.value,
            legacy_id=entity.legacy_id,
            transaction_type=entity.ttype.value,
        )
        if mode.is_dual and self.shadow_read_rate and random.random() < self.shadow_read_rate:
            mismatch = self._shadow_compare(entity, use_unified, meta)
        self._emit("get_transaction_status", mode, True, started, shadow_mismatch=mismatch)
        return status, meta

    def check_consistency(
        self, entity_id: object, system_type: LegacySystemType | str | None = None
    ) -> dict[str, Any]:
        """``{"consistent": bool, "inconsistencies": [...]}`` for one transaction."""
        ref = parse_entity_id(entity_id)
        with self._storage_errors(f"cannot read {entity_id}"), self.engine.connect() as conn:
            entity = self._read(conn, ref)
        if entity.legacy is None and entity.unified is None:
            raise EntityNotFoundError(str(entity_id))
        if system_type is not None and LegacySystemType.parse(system_type) is not entity.system:
            raise InputError(f"{entity_id} belongs to {entity.system.value}, not {system_type}")
        legacy = entity.legacy
        if legacy is not None and entity.unified is not None:
            with self._storage_errors(f"cannot read {entity_id}"), self.engine.connect() as conn:
                if self._replay_pending(conn, str(entity.unified["id"])):
                    # Legacy is frozen until the replay: compare with what it will hold
                    # (the same projection as the bulk check, unistatus.migration.check).
                    legacy = {**legacy, "status": entity.unified["legacy_status"]}
        found = consistency.compare(entity.system, legacy, entity.unified)
        return {
            "entity_id": str(entity_id),
            "transaction_id": entity.utx_id,
            "system": entity.system.value,
            "legacy_id": entity.legacy_id,
            "consistent": not found,
            "inconsistencies": [i.as_dict() for i in found],
        }

    def _storage_errors(self, what: str) -> AbstractContextManager[None]:
        """SQLAlchemy's and the driver's errors as StorageError: ``what`` and the cause."""
        return storage_errors(what, self._driver_error)

    @staticmethod
    def _replay_pending(conn: sa.Connection, utx_id: str) -> bool:
        q = sa.select(pending_legacy_changes.c.id).where(
            pending_legacy_changes.c.transaction_id == utx_id,
            pending_legacy_changes.c.replayed_at.is_(None),
        )
        return conn.execute(q.limit(1)).first() is not None

    # --- running a write ------------------------------------------------------------

    def _run(
        self,
        operation: str,
        work: Callable[[sa.Connection, DualWriteMode, str], DualWriteResult],
        fast: Callable[[DualWriteMode, str], DualWriteResult | None] | None = None,
        settle: Callable[[], bool] | None = None,
    ) -> DualWriteResult:
        """Run ``work`` in a write transaction, retrying what may be retried.

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
            return self._attempts(operation, work, fast, started, op_id, settle)
        if not gate.acquire(self.settings.write_queue_timeout_seconds):
            error = (
                f"no write slot within {self.settings.write_queue_timeout_seconds:g}s: "
                f"{gate.slots} writes in flight, {gate.waiting} queued (the database is "
                "slow or unreachable; see `unistatus diagnose`)"
            )
            return self._give_up(operation, op_id, self._last_mode, error, None, started)
        try:
            return self._attempts(operation, work, fast, started, op_id, settle)
        finally:
            gate.release()

    def _attempts(
        self,
        operation: str,
        work: Callable[[sa.Connection, DualWriteMode, str], DualWriteResult],
        fast: Callable[[DualWriteMode, str], DualWriteResult | None] | None,
        started: float,
        op_id: str,
        settle: Callable[[], bool] | None = None,
    ) -> DualWriteResult:
        """The attempt loop. Every way it ends reaches the observers exactly once: a
        result (success or failure) is returned, a refusal (bad input, a forbidden
        transition, a mode that does not allow the write) is raised.

        Once an attempt may have committed (its connection lost during COMMIT, or during
        an autocommit write of the fast path), the outcome stays unknown unless a later
        attempt succeeds: failures and refusals after it say "outcome unknown". A lost
        COMMIT is retried only when ``settle()`` says the retry can tell (a create with
        an idempotency key looks its key up first); a fast-path write is re-planned from
        a fresh read, under the same guards, so a change already applied is a no-op.
        """
        unknown: str | None = None
        last_error: str | None = None
        try:
            mode = self.mode
        except StorageError as exc:
            mode, last_error = self._last_mode, str(exc)
            return self._give_up(operation, op_id, mode, last_error, unknown, started)
        for attempt in range(MAX_ATTEMPTS):
            committing = False
            retry = False
            try:
                self._restore_retired_columns(mode)
                done = fast(mode, op_id) if fast is not None else None
                if done is not None:
                    result = done
                else:
                    with self.ops.write_transaction() as conn:
                        result = work(conn, mode, op_id)
                        committing = True
                result.duration_ms = (time.perf_counter() - started) * 1000
                self._emit(operation, mode, result.overall_success, started)
                return result
            except KeyTaken:
                continue  # nothing written: the next attempt returns the stored result
            except ModeChanged:
                try:
                    mode = self.modes.refresh()
                except StorageError as exc:
                    last_error = str(exc)
                    break
                continue
            except WriteLost as lost:
                last_error = describe(lost.error)
                unknown = unknown or f"connection lost during the write: {last_error}"
                retry = True
            except StorageError as exc:  # the database, not the caller
                last_error = str(exc)
                break
            except UnistatusError as exc:
                if unknown is not None:
                    # A retry refused on what the lost attempt may have written.
                    last_error = f"the retry was refused: {exc}"
                    break
                self._emit(operation, mode, True, started, refused=True)
                raise
            except sa.exc.DBAPIError as exc:
                last_error = describe(exc)
                if committing and exc.connection_invalidated:
                    # Lost during COMMIT: it may or may not have committed. Retried only
                    # where the retry can tell (a second create would duplicate).
                    unknown = unknown or f"connection lost during commit: {last_error}"
                    retry = settle is not None and settle()
                else:
                    # A connection lost before COMMIT rolled back: retry on a fresh one.
                    retry = _retryable(exc) or exc.connection_invalidated
            except (sa.exc.SQLAlchemyError, self._driver_error) as exc:
                # Pool timeouts, a connection closed under us, ...: never raw to the caller.
                last_error = f"{type(exc).__name__}: {exc}".strip()
                break
            if not retry or attempt + 1 >= MAX_ATTEMPTS:
                break
            time.sleep(0.005 * (attempt + 1) * (1 + random.random()))
        return self._give_up(
            operation, op_id, mode, last_error or "mode kept changing; retry", unknown, started
        )

    def _give_up(
        self,
        operation: str,
        op_id: str,
        mode: DualWriteMode,
        error: str,
        unknown: str | None,
        started: float,
    ) -> DualWriteResult:
        """The failed result, observed and logged; outcome unknown if ``unknown`` says why."""
        if unknown is not None:
            then = "" if error in unknown else f"; then: {error}"
            error = f"outcome unknown, it may have committed ({unknown}){then}"
        self._emit(operation, mode, False, started, error=error, outcome_unknown=bool(unknown))
        log.error("%s failed in %s: %s", operation, mode.value, error)
        result = self._failed(op_id, mode, error, started)
        result.outcome_unknown = unknown is not None
        return result

    @staticmethod
    def _failed(op_id: str, mode: DualWriteMode, error: str, started: float) -> DualWriteResult:
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

    def _confirm_mode(self, conn: sa.Connection, mode: DualWriteMode, *, locked: bool) -> None:
        """Re-read the mode once the mode lock is held; a switch in between means retry."""
        if not locked:
            self._mode_lock(conn)
        if read_mode(conn) is not mode:
            raise ModeChanged

    def _fast_path_available(self) -> bool:
        """PostgreSQL with ``unistatus_locked_mode()`` (revision 0007) installed."""
        if not self.ops.supports_dml_cte:
            return False
        with self.engine.connect() as conn:
            if has_locked_mode_function(conn):
                return True
        log.warning(
            "unistatus_locked_mode() is missing (schema older than revision 0007; "
            "`unistatus init` installs it): status changes take the locked path, "
            "which is as correct, only slower"
        )
        return False

    def _mode_lock(self, conn: sa.Connection) -> None:
        """Take the mode lock shared (held until commit; a mode switch waits for it)."""
        lock = self.hot.mode_lock()
        if lock is not None:
            lock.rows(conn, {})

    def _emit(
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
    ) -> None:
        if not self.observers:
            return
        event = OperationEvent(
            operation,
            mode,
            success,
            (time.perf_counter() - started) * 1000,
            shadow_mismatch,
            error,
            refused=refused,
            outcome_unknown=outcome_unknown,
        )
        for observer in self.observers:
            try:
                observer(event)
            except Exception:  # an observer must never break a write
                log.exception("operation observer failed")

    # --- reading and locking an entity ----------------------------------------------

    def _resolve(
        self, conn: sa.Connection, ref: EntityRef
    ) -> tuple[LegacySystemType, int | None, str | None]:
        """(system, legacy id, utx id) for any reference; looks born-unified ids up."""
        if isinstance(ref, LegacyRef):
            return ref.system, ref.legacy_id, None
        derived = ref.derived_ref
        if derived is not None:
            return derived.system, derived.legacy_id, ref.value
        row = conn.execute(
            sa.select(U.c.legacy_system, U.c.legacy_id).where(U.c.id == ref.value)
        ).first()
        if row is None:
            raise EntityNotFoundError(ref.value)
        return LegacySystemType(row.legacy_system), row.legacy_id, ref.value

    def _restore_retired_columns(self, mode: DualWriteMode) -> None:
        """Pick up legacy status columns restored since this adapter started.

        An adapter started while the columns were retired (phase 4) must write legacy
        again after a rollback restores them, without a restart: reflect once more.
        """
        if not mode.writes_legacy or all(lt.status is not None for lt in self.legacy.values()):
            return
        self.legacy = resolve_legacy_tables(self.engine, self.settings, require_status=False)
        self.hot = self._hot_statements()

    def _hot_statements(self) -> HotStatements:
        return HotStatements(
            self.legacy, self.ops, self.engine.dialect, locked_mode=self.locked_mode
        )

    def _unified_row(
        self, conn: sa.Connection, clause: sa.ColumnElement[bool], lock: bool
    ) -> Mapping[str, Any] | None:
        q = sa.select(U).where(clause)
        if lock:
            q = q.with_for_update()
            lock_clause = self.ops.mode_lock_clause()
            if lock_clause is not None:
                q = q.where(lock_clause)
        row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def _unified_clause(
        self, system: LegacySystemType, legacy_id: int | None, utx_id: str | None
    ) -> sa.ColumnElement[bool]:
        if legacy_id is not None:
            return sa.and_(U.c.legacy_system == system.value, U.c.legacy_id == legacy_id)
        assert utx_id is not None
        return U.c.id == utx_id

    def _lock(self, conn: sa.Connection, ref: EntityRef, mode: DualWriteMode) -> Entity:
        """Lock the entity: its legacy row while legacy is written, else its unified row.

        Writers always lock legacy before unified, so writers never deadlock each other.
        """
        system, legacy_id, utx_id = self._resolve(conn, ref)
        if not mode.writes_legacy or legacy_id is None:
            unified = self._unified_row(conn, self._unified_clause(system, legacy_id, utx_id), True)
            legacy = None
            if legacy_id is not None and (unified is None or mode.writes_legacy):
                legacy = self._legacy_row(conn, system, legacy_id, lock=False)
            if unified is None and legacy is None and mode.writes_legacy and utx_id:
                raise EntityNotFoundError(utx_id)
            return Entity(system, legacy_id, legacy, unified)
        if mode.writes_unified:
            both = self._lock_both(conn, system, legacy_id)
            if both is not None:
                return both
        rows = self.hot.lock_legacy(system).rows(conn, {"p_legacy_id": legacy_id})
        row = Entity.from_row(system, legacy_id, rows[0]).legacy if rows else None
        # LEGACY_ONLY leaves unified alone, so it need not read it (unless the legacy
        # row is missing, to tell "unknown" from "born unified").
        unified = (
            self._unified_row(conn, self._unified_clause(system, legacy_id, None), lock=False)
            if (row is not None and mode.writes_unified) or (row is None and utx_id)
            else None
        )
        return Entity(system, legacy_id, row, unified)

    def _lock_both(
        self, conn: sa.Connection, system: LegacySystemType, legacy_id: int
    ) -> Entity | None:
        """Lock the legacy row and its unified row in one statement (the common case).

        Both rows are locked, so PostgreSQL re-reads both at their latest committed
        versions after waiting (a joined row that is only read could be stale). None
        when either row is missing: the caller takes the two-statement path.
        """
        rows = self.hot.lock_both(system).rows(conn, {"p_legacy_id": legacy_id})
        return Entity.from_row(system, legacy_id, rows[0]) if rows else None

    def _legacy_row(
        self, conn: sa.Connection, system: LegacySystemType, legacy_id: int, *, lock: bool
    ) -> Mapping[str, Any] | None:
        lt = self.legacy[system]
        q = legacy_select(lt).where(lt.id == legacy_id)
        if lock:
            q = q.with_for_update()
        row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def _read(self, conn: sa.Connection, ref: EntityRef) -> Entity:
        try:
            system, legacy_id, utx_id = self._resolve(conn, ref)
        except EntityNotFoundError:
            derived = ref.derived_ref if isinstance(ref, UtxId) else None
            return Entity(derived.system if derived else LegacySystemType.CASHOUT, None, None, None)
        # Once the legacy status column is retired, reads come from the unified row only.
        legacy = (
            self._legacy_row(conn, system, legacy_id, lock=False)
            if legacy_id is not None and self.legacy[system].status is not None
            else None
        )
        unified = self._unified_row(conn, self._unified_clause(system, legacy_id, utx_id), False)
        return Entity(system, legacy_id, legacy, unified)

    # --- deciding ---------------------------------------------------------------------

    def _target(
        self, ttype: UnifiedTransactionType, new_status: object
    ) -> tuple[UnifiedTransactionStatus, str | None]:
        """(unified target, explicit legacy value or None) for a unified or legacy status."""
        system = ttype.legacy_system
        if isinstance(new_status, UnifiedTransactionStatus):
            return self.mapper.parse_unified(ttype, new_status), None
        if isinstance(new_status, Enum):
            if not isinstance(new_status, system.status_enum):
                raise InputError(
                    f"{type(new_status).__name__}.{new_status.name} is not a status of "
                    f"{system.value} (a {ttype.value} transaction)"
                )
            value = str(new_status.value)
            return self.mapper.to_unified(system, value), value
        if not isinstance(new_status, str):
            raise InputError(f"status must be a string or a status enum, got {new_status!r}")
        if self.mapper.is_valid_unified(ttype, new_status):
            return UnifiedTransactionStatus(new_status), None
        if self.mapper.is_legacy_status(system, new_status):
            return self.mapper.to_unified(system, new_status), new_status
        valid = {s.value for s in self.mapper.valid_statuses(ttype)}
        raise InvalidStatusError(
            ttype.value,
            new_status,
            sorted(valid | {f"{system.value}.{s}" for s in self.mapper.legacy_statuses(system)}),
        )

    def _plan(
        self,
        entity: Entity,
        mode: DualWriteMode,
        new_status: object,
        reason: str,
        triggered_by: str,
        metadata: dict[str, Any] | None,
        force: bool,
    ) -> Plan:
        ttype = entity.ttype
        dst, explicit_legacy = self._target(ttype, new_status)
        unified, legacy = entity.unified, entity.legacy
        # The unified status is the current one whenever it is authoritative or agrees
        # with legacy: it may be a refinement legacy cannot express (RELEASE_PENDING vs
        # ACTIVE), and judging from legacy would lose it (and break the history chain).
        if unified is not None and (
            mode.reads_unified
            or legacy is None
            or self.mapper.is_compatible(entity.system, legacy["status"], unified["status"])
        ):
            src: UnifiedTransactionStatus | None = UnifiedTransactionStatus(unified["status"])
            src_legacy = (
                legacy["status"]
                if legacy is not None and mode.writes_legacy
                else unified["legacy_status"]
            )
        else:
            assert legacy is not None
            src_legacy = legacy["status"]
            src = self.mapper.try_to_unified(entity.system, src_legacy)
        if src is None:
            if not force:
                raise UnmappableStatusError(entity.system.value, src_legacy)
            if not reason or not reason.strip():
                raise InputError("overriding an unmappable current status needs a reason")
            kind = TransitionKind.OVERRIDE
        else:
            kind = self.rules.check(ttype, src, dst, force=force, reason=reason)
        dst_legacy = explicit_legacy or self.mapper.to_legacy(ttype, dst, current=src_legacy)
        return Plan(
            mode=mode,
            entity=entity,
            src=src,
            dst=dst,
            src_legacy=src_legacy,
            dst_legacy=dst_legacy,
            kind=kind,
            reason=reason,
            triggered_by=str(triggered_by),
            metadata=metadata,
            operation_id="",
        )

    # --- writing ----------------------------------------------------------------------

    @staticmethod
    def _result(plan: Plan) -> DualWriteResult:
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

    def _apply(self, conn: sa.Connection, plan: Plan) -> DualWriteResult:
        e, mode = plan.entity, plan.mode
        result = self._result(plan)
        if plan.kind is TransitionKind.NOOP and self._in_step(plan):
            self._confirm_mode(conn, mode, locked=True)
            result.changed = False
            return result
        if self._one_statement(plan):
            self._write_one_statement(conn, plan)
            return result
        self._confirm_mode(conn, mode, locked=True)
        legacy_side = (
            (lambda: self._write_legacy_status(conn, plan)) if mode.writes_legacy else None
        )
        unified_side = (
            (lambda: self._write_unified_status(conn, plan)) if mode.writes_unified else None
        )
        if mode.reads_unified:
            primary, secondary = unified_side, legacy_side
        else:
            primary, secondary = legacy_side, unified_side
        assert primary is not None
        primary()
        if secondary is not None:
            self._secondary(conn, secondary, result, e)
        if mode.writes_unified:
            self._history(conn, plan, result)
        if mode is DualWriteMode.UNIFIED_ONLY:
            self._pending(conn, e.utx_id, "status", plan.dst_legacy, plan.operation_id, plan.now)
        return result

    def _one_statement(self, plan: Plan) -> bool:
        """Whether this change can be written as one guarded statement (the hot path).

        Needs data-modifying CTEs, both rows present (or legacy alone in LEGACY_ONLY),
        and no savepoint between the sides (``primary_wins`` needs one).
        """
        e, mode = plan.entity, plan.mode
        if not self.ops.supports_dml_cte or not mode.writes_legacy or e.legacy is None:
            return False
        if not mode.writes_unified:
            return True
        return e.unified is not None and self.fallback == "strict"

    def _write_one_statement(self, conn: sa.Connection, plan: Plan) -> None:
        """Legacy UPDATE (+ unified UPDATE + history INSERT) in one round trip.

        The statement carries the mode check (instead of a separate read): its snapshot
        is taken after the mode lock was granted, so it sees any switch that committed
        before; if the mode moved, nothing matches, nothing is written, and the write is
        retried under the new mode.
        """
        e = plan.entity
        params = self._one_statement_params(plan)
        if not plan.mode.writes_unified:
            if not self.hot.legacy_write(e.system).rows(conn, params):
                raise ModeChanged
            return
        if self.hot.dual_write(e.system).rows(conn, params)[0][0] != 1:
            raise ModeChanged

    def _one_statement_params(self, plan: Plan) -> dict[str, Any]:
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
            for k, v in self._history_values(plan).items():
                params[f"h_{k}"] = v
        return params

    def _in_step(self, plan: Plan) -> bool:
        """True when every side this mode writes already holds the target (a no-op)."""
        e, mode = plan.entity, plan.mode
        if mode.writes_legacy and e.legacy is not None and e.legacy["status"] != plan.dst_legacy:
            return False
        if not mode.writes_unified:
            return True
        u = e.unified
        return (
            u is not None
            and u["status"] == plan.dst.value
            and u["legacy_status"] == plan.dst_legacy
        )

    def _secondary(
        self, conn: sa.Connection, write: Callable[[], None], result: DualWriteResult, e: Entity
    ) -> None:
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
            error = f"secondary write failed: {type(exc.orig).__name__}: {exc.orig}"
            log.warning("%s (%s); queued for repair", error, result.entity_id)
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

    def _write_legacy_status(self, conn: sa.Connection, plan: Plan) -> None:
        e = plan.entity
        if e.legacy is None:
            raise ModeError(
                f"{e.utx_id} has no legacy row; replay pending changes before writing legacy"
            )
        lt = self.legacy[e.system]
        conn.execute(
            sa.update(lt.table)
            .where(lt.id == e.legacy_id)
            .values({legacy_status_column(lt).key: plan.dst_legacy, lt.updated_at.key: plan.now})
        )

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
        self._upsert_from_legacy(conn, e, plan.dst.value, plan.dst_legacy, plan.now)

    def _upsert_from_legacy(
        self,
        conn: sa.Connection,
        e: Entity,
        status: str,
        legacy_status: str,
        now: Any,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        assert e.legacy is not None and e.legacy_id is not None
        values = {
            "id": derive_utx_id(e.system, e.legacy_id),
            "transaction_type": e.ttype.value,
            "legacy_system": e.system.value,
            "legacy_id": e.legacy_id,
            "user_id": e.legacy["user_id"],
            "amount": e.legacy["amount"],
            "currency": e.legacy["currency"],
            "status": status,
            "legacy_status": legacy_status,
            "version": 1,
            "origin": "dual_write",
            "meta": metadata,
            "created_at": e.legacy["created_at"] or now,
            "updated_at": now,
        }
        stmt = self.ops.insert(U).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[U.c.legacy_system, U.c.legacy_id],
            set_={
                "status": stmt.excluded.status,
                "legacy_status": stmt.excluded.legacy_status,
                "version": U.c.version + 1,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        conn.execute(stmt)

    def _history(self, conn: sa.Connection, plan: Plan, result: DualWriteResult) -> None:
        conn.execute(sa.insert(status_history).values(self._history_values(plan)))

    def _history_values(self, plan: Plan) -> dict[str, Any]:
        e = plan.entity
        return dict(
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

    def _pending(
        self,
        conn: sa.Connection,
        utx_id: str,
        kind: str,
        legacy_status: str | None,
        op_id: str,
        now: Any,
    ) -> None:
        conn.execute(
            sa.insert(pending_legacy_changes).values(
                transaction_id=utx_id,
                kind=kind,
                legacy_status=legacy_status,
                operation_id=op_id,
                created_at=now,
            )
        )

    # --- creating -----------------------------------------------------------------------

    def _create_new(
        self,
        conn: sa.Connection,
        mode: DualWriteMode,
        op_id: str,
        system: LegacySystemType,
        ref: LegacyRef | None,
        fields: dict[str, Any],
        dst: UnifiedTransactionStatus,
        dst_legacy: str,
        metadata: dict[str, Any] | None,
        triggered_by: str = "create_transaction",
    ) -> DualWriteResult:
        now = utcnow()
        result = self._created(op_id, system, mode, dst, dst_legacy)
        legacy_id: int | None = None
        if mode.writes_legacy:
            lt = self.legacy[system]
            values = {
                lt.user_id.key: fields["user_id"],
                lt.amount.key: fields["amount"],
                lt.currency.key: fields["currency"],
                legacy_status_column(lt).key: dst_legacy,
                lt.created_at.key: now,
                lt.updated_at.key: now,
            }
            if ref is not None:
                values[lt.id.key] = ref.legacy_id
            legacy_id = conn.execute(
                sa.insert(lt.table).values(values).returning(lt.id)
            ).scalar_one()
            result.legacy_entity_id = legacy_id
        if not mode.writes_unified:
            result.entity_id = derive_utx_id(system, legacy_id) if legacy_id else None
            return result
        utx_id = derive_utx_id(system, legacy_id) if legacy_id is not None else new_unified_id()
        result.entity_id = utx_id
        conn.execute(
            sa.insert(U).values(
                id=utx_id,
                transaction_type=system.transaction_type.value,
                legacy_system=system.value,
                legacy_id=legacy_id,
                status=dst.value,
                legacy_status=dst_legacy,
                version=1,
                origin="unified" if mode is DualWriteMode.UNIFIED_ONLY else "dual_write",
                meta=metadata,
                created_at=now,
                updated_at=now,
                **fields,
            )
        )
        entity = Entity(system, legacy_id, None, {"id": utx_id})
        plan = Plan(
            mode,
            entity,
            None,
            dst,
            None,
            dst_legacy,
            TransitionKind.ALLOWED,
            "created",
            triggered_by,
            metadata,
            op_id,
            now,
        )
        self._history(conn, plan, result)
        if mode is DualWriteMode.UNIFIED_ONLY:
            self._pending(conn, utx_id, "create", dst_legacy, op_id, now)
        return result

    def _create_in_one_statement(
        self,
        conn: sa.Connection,
        mode: DualWriteMode,
        op_id: str,
        system: LegacySystemType,
        fields: dict[str, Any],
        dst: UnifiedTransactionStatus,
        dst_legacy: str,
        metadata: dict[str, Any] | None,
        triggered_by: str = "create_transaction",
        claim: IdempotencyClaim | None = None,
    ) -> DualWriteResult:
        """The hot path of a new transaction: one guarded statement (after the mode lock,
        unless the statement takes it itself: ``unistatus_locked_mode()``).

        Legacy INSERT (+ unified INSERT + first history row in the dual modes), written
        only while the stored mode is still ``mode``; no row back means it moved. With a
        ``claim``, the idempotency key's row is written by the same statement.
        """
        if not self.hot.locked_mode:
            self._mode_lock(conn)
        params: dict[str, Any] = {
            "p_mode": mode.value,
            "c_user_id": fields["user_id"],
            "c_amount": fields["amount"],
            "c_currency": fields["currency"],
            "c_legacy_status": dst_legacy,
            "c_now": utcnow(),
        }
        result = self._created(op_id, system, mode, dst, dst_legacy)
        keyed = claim is not None
        if claim is not None:
            params.update(claim.params(), c_status=dst.value, c_operation_id=op_id)
        if not mode.writes_unified:
            rows = self.hot.create_legacy(system, keyed=keyed).rows(conn, params)
            if not rows:
                raise ModeChanged
            if keyed and rows[0][1] != 1:
                raise StorageError(f"creating {system.value} stored {rows[0][1]} keys, not 1")
            result.legacy_entity_id = int(rows[0][0])
            result.entity_id = derive_utx_id(system, result.legacy_entity_id)
            if self.fast is not None:
                self.fast.remember_created(system, result.legacy_entity_id, dst_legacy)
            return result
        params.update(
            c_status=dst.value, c_meta=metadata, c_operation_id=op_id, c_triggered_by=triggered_by
        )
        rows = self.hot.create_dual(system, keyed=keyed).rows(conn, params)
        if not rows:
            raise ModeChanged
        utx_id, legacy_id, history_rows = rows[0][:3]
        if history_rows != 1 or keyed and rows[0][3] != 1:
            raise StorageError(f"creating {utx_id} wrote {history_rows} history rows, not 1")
        result.entity_id, result.legacy_entity_id = str(utx_id), int(legacy_id)
        if self.fast is not None:
            self.fast.remember_created(system, int(legacy_id), dst_legacy, (str(utx_id), dst.value))
        return result

    @staticmethod
    def _created(
        op_id: str,
        system: LegacySystemType,
        mode: DualWriteMode,
        dst: UnifiedTransactionStatus,
        dst_legacy: str,
    ) -> DualWriteResult:
        return DualWriteResult(
            operation_id=op_id,
            entity_id=None,
            legacy_entity_id=None,
            legacy_system=system,
            mode=mode,
            primary_success=True,
            secondary_success=True,
            overall_success=True,
            status=dst,
            legacy_status=dst_legacy,
        )

    def _link_existing(
        self,
        conn: sa.Connection,
        mode: DualWriteMode,
        op_id: str,
        entity: Entity,
        fields: dict[str, Any],
        metadata: dict[str, Any] | None,
        triggered_by: str = "create_transaction",
    ) -> DualWriteResult:
        """create_transaction for a legacy row that already exists: link it (idempotent)."""
        self._confirm_mode(conn, mode, locked=True)
        source = entity.legacy if entity.legacy is not None else entity.unified
        assert source is not None
        for name, value in fields.items():
            same = Decimal(source[name]) == value if name == "amount" else source[name] == value
            if not same:
                raise InputError(
                    f"{entity.system.value.lower()}:{entity.legacy_id} exists with {name}="
                    f"{source[name]}, not {value}"
                )
        result = DualWriteResult(
            operation_id=op_id,
            entity_id=entity.utx_id,
            legacy_entity_id=entity.legacy_id,
            legacy_system=entity.system,
            mode=mode,
            primary_success=True,
            secondary_success=True,
            overall_success=True,
            changed=False,
        )
        if entity.unified is not None or not mode.writes_unified:
            if entity.unified is not None:
                result.status = UnifiedTransactionStatus(entity.unified["status"])
            return result
        assert entity.legacy is not None
        status = self.mapper.try_to_unified(entity.system, entity.legacy["status"])
        if status is None:
            raise UnmappableStatusError(entity.system.value, entity.legacy["status"])
        now = utcnow()
        self._upsert_from_legacy(conn, entity, status.value, entity.legacy["status"], now, metadata)
        plan = Plan(
            mode,
            entity,
            None,
            status,
            None,
            entity.legacy["status"],
            TransitionKind.ALLOWED,
            "linked existing legacy row",
            triggered_by,
            metadata,
            op_id,
            now,
        )
        self._history(conn, plan, result)
        result.status, result.legacy_status, result.changed = status, entity.legacy["status"], True
        return result

    # --- shadow reads -------------------------------------------------------------------

    def _shadow_compare(self, entity: Entity, used_unified: bool, meta: dict[str, Any]) -> bool:
        """Compare the other side; count and log a mismatch, never raise."""
        try:
            found = consistency.compare(entity.system, entity.legacy, entity.unified)
        except Exception:  # the shadow side must never break the read
            log.exception("shadow read failed for %s", meta.get("entity_id"))
            return False
        if found:
            self.shadow_mismatches += 1
            meta["shadow_mismatch"] = [i.kind.value for i in found]
            log.warning(
                "shadow read mismatch for %s (authoritative: %s): %s",
                meta.get("entity_id"),
                "unified" if used_unified else "legacy",
                [i.as_dict() for i in found],
            )
            return True
        return False

    @contextmanager
    def connection(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn


# --- input checks ---------------------------------------------------------------------


def _parse_type(value: object) -> UnifiedTransactionType:
    try:
        return UnifiedTransactionType(str(value.value if isinstance(value, Enum) else value))
    except ValueError:
        raise InputError(
            f"unknown transaction type {value!r}; expected one of: "
            + ", ".join(t.value for t in UnifiedTransactionType)
        ) from None


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(
        s in text for s in ("deadlock", "could not serialize", "database is locked", "lock timeout")
    )
