"""DualWriteAdapter: the one way the application writes transaction statuses.

The facade: the public methods and the wiring; the work is done by ``plan``, ``rows``,
``writes``, ``create``, ``fast`` and ``runner``, the reads by ``reads``. What a write guarantees (mode lock,
row locks, fallbacks, results instead of driver errors): docs/adapter.md.
With ``connection=`` an operation runs in the caller's transaction (``caller``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from functools import partial
from typing import Any

import sqlalchemy as sa

from unistatus.adapter.admission import FairGate
from unistatus.adapter.caller import CallerConnection, CallerTransactions
from unistatus.adapter.create import Creator, NewTransaction, linked_ref
from unistatus.adapter.fast import FastStatusWriter, locked_mode_available
from unistatus.adapter.forks import fresh_pool, survive_forks
from unistatus.adapter.keys import IdempotencyClaim
from unistatus.adapter.model import DualWriteResult, Fallback, OperationEvent
from unistatus.adapter.plan import Planner, parse_type
from unistatus.adapter.reads import StatusReads
from unistatus.adapter.rows import EntityRows, held_ref
from unistatus.adapter.runner import Runner
from unistatus.adapter.sql import HotStatements
from unistatus.adapter.stats import OperationStats, acquire, release
from unistatus.adapter.storable import StorableStatus
from unistatus.adapter.writes import LockedWriter, result_of
from unistatus.config import Settings, load_settings
from unistatus.db.app_triggers import holding_systems
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine, session_name
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.mode_watcher import ModeWatcher
from unistatus.db.row_security import warn_row_security
from unistatus.db.server_clock import clock_of, warn_of_skew
from unistatus.db.tables import unified_transactions
from unistatus.domain.ids import EntityRef, LegacyRef, UtxId, parse_entity_id
from unistatus.domain.inputs import (
    MAX_ACTOR_CHARS,
    MAX_REASON_CHARS,
    check_amount,
    check_currency,
    check_flag,
    check_legacy_values,
    check_metadata,
    check_text,
    check_user_id,
)
from unistatus.domain.kept_values import KEPT_KEY
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import (
    DualWriteMode,
    LegacySystemType,
    UnifiedTransactionStatus,
    UnifiedTransactionType,
)
from unistatus.domain.transitions import TransitionRules
from unistatus.errors import (
    EntityNotFoundError,
    InputError,
    UnistatusError,
)

__all__ = ["DualWriteAdapter", "DualWriteResult", "Fallback", "OperationEvent"]

# Born-unified transactions whose system an adapter remembers (then it starts over).
BORN_UNIFIED_REMEMBERED = 100_000


class DualWriteAdapter:
    """Writes statuses to the legacy tables and ``unified_transactions`` per the mode.

    ``database`` is a URL or a SQLAlchemy ``Engine``. The mode lives in the database and
    is re-read at most every ``settings.mode_refresh_seconds``.

    Operation statistics are recorded unless ``record_stats=False`` (default: the
    ``record_stats`` setting, ``UNISTATUS_RECORD_STATS``): the adapters of a process on
    one engine share one :class:`~unistatus.adapter.stats.OperationStats`, flushed every
    ``settings.stats_flush_seconds``. :meth:`close` (or ``with``) flushes it; an adapter
    never closed is flushed at exit.
    """

    def __init__(
        self,
        database: str | sa.Engine | None = None,
        *,
        fallback: Fallback | None = None,
        shadow_read_rate: float | None = None,
        settings: Settings | None = None,
        record_stats: bool | None = None,
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
        # Built here from a URL: nothing else holds it, so close() closes its pool.
        self._owns_engine = not isinstance(database, sa.Engine)
        self.engine = create_engine(
            database or self.settings.database_url,
            lock_timeout_ms=self.settings.lock_timeout_ms,
            schema=self.settings.schema,
            prepared_statements=self.settings.prepared_statements,
            application_name=session_name("adapter"),  # live traffic
            network=self.settings.network,
            pool_size=self.settings.pool_size,
            max_overflow=self.settings.max_overflow,
        )
        self.ops = ops_for(self.engine)
        self.mapper = LegacyStatusMapper()
        self.rules = TransitionRules()
        self.modes = ModeWatcher(self.engine, self.settings.mode_refresh_seconds)
        # The systems of transactions born unified (their id does not say it).
        self._born_unified: dict[str, LegacySystemType] = {}
        self._system_query = sa.select(unified_transactions.c.legacy_system).where(
            unified_transactions.c.id == sa.bindparam("p_utx_id")
        )
        slots = self.settings.write_concurrency
        if slots is None:
            slots = self.ops.default_write_concurrency
        self.gate = FairGate(slots) if slots else None
        self._runner = Runner(
            self.ops,
            self.modes,
            # The driver's own error root: nothing of it (nor of SQLAlchemy) leaves.
            self.engine.dialect.loaded_dbapi.Error,
            self.gate,
            self.settings,
            self._restore_retired_columns,
        )
        with self._runner.storage_errors("the adapter cannot start"):
            legacy = resolve_legacy_tables(  # status may be retired: legacy_status_column
                self.engine, self.settings, require_status=False, warn_kinds=True
            )
            warn_row_security(self.engine, self.settings)
            warn_of_skew(self.engine, "the adapter")
            # Status changes in one or two round trips where the database allows
            # (PostgreSQL, revision 0015); else, and whenever it declines, the locked path.
            self.locked_mode = locked_mode_available(self.engine, self.ops)
            holding = holding_systems(self.engine, legacy) if self.locked_mode else frozenset()
        # Hot-path statements, built once per legacy system and compiled once.
        self.hot = HotStatements(
            legacy, self.ops, locked_mode=self.locked_mode, clock=clock_of(self.engine)
        )
        self.fast = (
            FastStatusWriter(
                self.engine,
                self.hot,
                fallback,
                self.mapper,
                self.settings.state_cache_size,
                holding,
            )
            if self.locked_mode
            else None
        )
        storable = StorableStatus(self.engine, self.settings, self.hot).check
        self._planner = Planner(self.mapper, self.rules, storable, self.hot.clock.now)
        self._rows = EntityRows(self.hot, self.ops)
        self._writer = LockedWriter(self.hot, self.ops, fallback, self.mapper)
        self._creator = Creator(
            self.hot, self.ops, self._rows, self._writer, self.mapper, self.fast, storable
        )
        # connection=: the caller's transaction (which it may roll back): state cache untouched.
        self._caller = CallerTransactions(
            self._runner,
            self.ops,
            self.engine,
            locked_mode=self.locked_mode,
            legacy=lambda: self.hot.legacy,
        )
        self._caller_creator = Creator(
            self.hot, self.ops, self._rows, self._writer, self.mapper, None, storable
        )
        self._reads = StatusReads(
            self._runner,
            self._caller,
            self._rows,
            self.hot,
            self.mapper,
            self._follow_restored_columns,
        )
        survive_forks(self)
        record = self.settings.record_stats if record_stats is None else record_stats
        self._stats: OperationStats | None = None
        if record:
            self._stats = acquire(self, self.engine, self.settings.stats_flush_seconds)
            self._stats.attach(self)

    # --- public API -----------------------------------------------------------------

    @property
    def mode(self) -> DualWriteMode:
        """The mode of every system (re-read when stale); ModeError while the systems are
        in different modes (:meth:`mode_of`), StorageError if it cannot be read."""
        return self._runner.mode()

    def mode_of(self, system: LegacySystemType | str) -> DualWriteMode:
        """``system``'s mode (re-read when stale); StorageError if it cannot be read."""
        return self._runner.mode(LegacySystemType.parse(system))

    def _system_of(self, ref: EntityRef, conn: sa.Connection | None = None) -> LegacySystemType:
        """The legacy system of the entity ``ref`` names: from the reference itself, or
        (born unified) from its unified row, read once (on ``conn``, else a connection
        of the pool) and remembered: a transaction never changes system. Unknown: any
        system; the write then finds no entity and says so."""
        if isinstance(ref, LegacyRef):
            return ref.system
        derived = ref.derived_ref
        if derived is not None:
            return derived.system
        known = self._born_unified.get(ref.value)
        if known is not None:
            return known
        if conn is None:
            with self.engine.connect() as own:
                return self._system_of(ref, own)
        found = conn.execute(self._system_query, {"p_utx_id": ref.value}).scalar_one_or_none()
        if found is None:
            return LegacySystemType.CASHOUT
        system = LegacySystemType(found)
        self._remember_system(ref.value, system)
        return system

    def _remember_system(self, utx_id: str | None, system: LegacySystemType) -> None:
        """Remember the system of a transaction born unified (its id does not say it)."""
        if utx_id is None or utx_id in self._born_unified:
            return
        if not isinstance(ref := parse_entity_id(utx_id), UtxId) or ref.derived_ref is not None:
            return
        if len(self._born_unified) >= BORN_UNIFIED_REMEMBERED:
            self._born_unified.clear()
        self._born_unified[utx_id] = system

    @property
    def legacy(self) -> dict[LegacySystemType, LegacyTable]:
        """The legacy tables as last reflected."""
        return self.hot.legacy

    @property
    def stats(self) -> OperationStats | None:
        """The statistics this adapter records into (shared per engine), None when off."""
        return self._stats

    @property
    def observers(self) -> list[Callable[[OperationEvent], None]]:
        """Called with an :class:`OperationEvent` after every operation (for metrics).

        The statistics recorder is one of them when ``record_stats`` is on.
        """
        return self._runner.observers

    @observers.setter
    def observers(self, observers: list[Callable[[OperationEvent], None]]) -> None:
        self._runner.observers = observers

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
        *,
        legacy_values: dict[str, Any] | None = None,
        connection: CallerConnection | None = None,
    ) -> DualWriteResult:
        """Create a transaction on the sides the mode writes (or link an existing legacy row).

        With ``idempotency_key``, a repeated call with the same key and arguments returns
        the first call's result (``replayed=True``) instead of writing again, also after
        an outcome-unknown result and when the calls race; the same key with other
        arguments is an InputError (:mod:`unistatus.adapter.keys`). ``triggered_by``
        names who created it in the first history row. ``legacy_values``: the application's
        own columns of the new legacy row, checked against the table (:mod:`...create`;
        a type Python cannot judge by the database first: :mod:`unistatus.db.legacy_cast`).
        With ``connection`` (a Connection in a transaction, or an ORM Session) it is
        written in the caller's transaction, committed or rolled back by the caller
        (:mod:`unistatus.adapter.caller`); a repeated key is looked up first there.
        """
        ttype = parse_type(transaction_type)
        system = ttype.legacy_system
        fields = {
            "user_id": check_user_id(user_id),
            "amount": check_amount(amount, self.ops.exact_numeric_digits),
            "currency": check_currency(currency),
        }
        check_metadata(metadata)
        if metadata and KEPT_KEY in metadata:
            raise InputError(
                f"metadata: the key {KEPT_KEY!r} is reserved (unistatus keeps a create's "
                "legacy_values there for the rollback's replay)"
            )
        check_text("triggered_by", triggered_by, MAX_ACTOR_CHARS, one_line=True)
        lt = self.hot.legacy[system]
        lt.check_shared(fields)
        extra = check_legacy_values(legacy_values or {}, lt.extra_columns, lt.owned, lt.name)
        dst, explicit_legacy = self._planner.target(
            ttype, UnifiedTransactionStatus.PENDING if status is None else status
        )
        dst_legacy = explicit_legacy or self.mapper.to_legacy(ttype, dst)
        ref = linked_ref(lt, legacy_entity_id)
        claim = None
        if idempotency_key is not None:
            arguments = {
                "transaction_type": ttype,
                "legacy_entity_id": legacy_entity_id,
                "status": dst,
                "legacy_status": dst_legacy,
                "metadata": metadata,
                **fields,
                **({"legacy_values": extra} if extra else {}),
            }
            claim = IdempotencyClaim.of(idempotency_key, arguments)
        new = NewTransaction(
            system,
            ref,
            fields,
            dst,
            dst_legacy,
            metadata,
            triggered_by,
            claim,
            extra,
            status_given=status is not None,
            legacy_status_given=explicit_legacy is not None,
        )
        if connection is not None:
            if claim is not None:
                claim.look_first = True  # no second attempt in the caller's transaction
            work = partial(self._caller_creator.work, new=new)
            return self._caller.write("create_transaction", connection, work, system=system)
        work = partial(self._creator.work, new=new)
        settle = claim.settle if claim else None
        result = self._runner.run("create_transaction", work, settle=settle, system=system)
        self._remember_system(result.entity_id, system)
        return result

    def update_status(
        self,
        entity_id: object,
        new_status: object,
        reason: str,
        triggered_by: str,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
        *,
        connection: CallerConnection | None = None,
    ) -> DualWriteResult:
        """Change a transaction's status; ``new_status`` may be unified or legacy.

        With ``connection``: in the caller's transaction (:mod:`unistatus.adapter.caller`).
        """
        ref = held_ref(entity_id, self.hot.legacy)
        check_text("triggered_by", triggered_by, MAX_ACTOR_CHARS, one_line=True)
        check_text("reason", reason, MAX_REASON_CHARS, required=False)
        check_metadata(metadata)
        if new_status is None:
            raise InputError("new_status is required")
        check_flag("force", force)  # "false" is truthy: it would override the rules
        planner, rows = self._planner, self._rows

        def work(conn: sa.Connection, mode: DualWriteMode, op_id: str) -> DualWriteResult:
            entity = rows.lock(conn, ref, mode)
            if entity.legacy is None and entity.unified is None:
                raise EntityNotFoundError(str(entity_id))
            try:
                plan = planner.change(
                    entity, mode, new_status, reason, triggered_by, metadata, force
                )
            except UnistatusError:
                # Judged under a mode that may just have changed: only refuse for real.
                rows.confirm_mode(conn, mode, entity.system, locked=True)
                raise
            plan.operation_id = op_id
            return self._writer.apply(conn, plan)

        fast = self.fast

        def fast_work(
            mode: DualWriteMode, op_id: str, conn: sa.Connection | None = None
        ) -> DualWriteResult | None:
            assert fast is not None
            change = partial(planner.change, mode=mode, new_status=new_status, reason=reason)
            plan = fast.update(
                ref,
                mode,
                op_id,
                partial(change, triggered_by=triggered_by, metadata=metadata, force=force),
                conn,
            )
            return None if plan is None else result_of(plan)

        if connection is not None:
            in_caller = (lambda c, m, o: fast_work(m, o, c)) if fast is not None else None
            # The fast path remembered the change; the caller may still undo it.
            undo = partial(fast.forget, ref) if fast is not None else None
            return self._caller.write(
                "update_status",
                connection,
                work,
                in_caller,
                undo,
                system=partial(self._system_of, ref),
            )
        with self._runner.storage_errors(f"cannot read {entity_id}"):
            system = self._system_of(ref)
        return self._runner.run(
            "update_status", work, fast_work if fast is not None else None, system=system
        )

    def get_transaction_status(
        self, entity_id: object, *, connection: CallerConnection | None = None
    ) -> tuple[UnifiedTransactionStatus | None, dict[str, Any]]:
        """The status from the authoritative side, with ``metadata['source']``.

        With ``connection``: read in the caller's transaction (its own writes included).
        """
        return self._reads.status(entity_id, connection, self.shadow_read_rate)

    def check_consistency(
        self,
        entity_id: object,
        system_type: LegacySystemType | str | None = None,
        *,
        connection: CallerConnection | None = None,
    ) -> dict[str, Any]:
        """``{"consistent": bool, "inconsistencies": [...]}`` for one transaction
        (with ``connection``: as the caller's transaction sees it)."""
        return self._reads.consistency(entity_id, system_type, connection)

    @property
    def shadow_mismatches(self) -> int:
        """Shadow reads that found the other side disagreeing, since this adapter started."""
        return self._reads.shadow_mismatches

    @shadow_mismatches.setter
    def shadow_mismatches(self, count: int) -> None:
        self._reads.shadow_mismatches = count

    # --- closing ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop recording statistics and flush them; the last adapter on the engine also
        stops the flusher thread.

        Idempotent. An engine given stays open (the application's); one the adapter
        built from a URL has its connections closed (opened again if used after).
        Operations after close still work, they are no longer recorded.
        """
        stats, self._stats = self._stats, None
        if stats is not None:
            observers = self._runner.observers
            if stats.record in observers:
                observers.remove(stats.record)
            release(self, stats)
        if self._owns_engine:
            self.engine.dispose()

    def after_fork_in_child(self) -> None:
        """In a child forked after this adapter was built (:mod:`~.forks`): connections,
        the mode and every write slot of its own."""
        fresh_pool(self.engine)
        self.modes.after_fork_in_child()
        if self.gate is not None:
            self.gate.after_fork_in_child()

    def __enter__(self) -> DualWriteAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- wiring -----------------------------------------------------------------------

    def _restore_retired_columns(self, mode: DualWriteMode) -> None:
        """Pick up legacy status columns restored since this adapter started.

        An adapter started while the columns were retired (phase 4) must write legacy
        again after a rollback restores them, without a restart: reflect once more.
        """
        if not mode.writes_legacy or all(lt.status is not None for lt in self.legacy.values()):
            return
        self.hot.reload(resolve_legacy_tables(self.engine, self.settings, require_status=False))
        if self.fast is not None:  # a trigger naming a column restored just now
            self.fast.holding |= holding_systems(self.engine, self.hot.legacy)

    def _follow_restored_columns(self) -> None:
        """Reads too: once a rollback restored the legacy status columns (any system's
        mode writes legacy again), an adapter started while they were retired reads
        legacy again, before any write of its own (which would pick them up as well)."""
        if all(lt.status is not None for lt in self.legacy.values()):
            return
        with self._runner.storage_errors("cannot read the mode"):
            writing = [m for m in self.modes.modes().values() if m.writes_legacy]
        if writing:
            with self._runner.storage_errors("cannot reflect the legacy tables"):
                self._restore_retired_columns(writing[0])

    @contextmanager
    def connection(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn
