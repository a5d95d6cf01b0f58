"""Creating a transaction, or linking a legacy row that already exists.

A new transaction is written on the sides the mode writes, with its first history row:
in one guarded statement where the dialect allows (:meth:`HotStatements.create_dual`),
else statement by statement. A legacy id that already exists is linked instead: its
unified row is made from the legacy row if the mode writes unified and none exists. With
an idempotency key the first result is stored, and replayed to a repeated call
(:mod:`unistatus.adapter.keys`).

The application's own legacy columns (``legacy_values``, checked by the facade) go into
the legacy INSERT, on either path; in UNIFIED_ONLY they are kept in the first history row
for the rollback's replay, which creates the legacy row (:mod:`unistatus.domain.kept_values`). Under ``primary_wins`` in the dual modes the one
statement runs in a savepoint; if the database refuses it, the locked path writes the
secondary side in a savepoint of its own: if it is refused again, the primary side still
commits and the entity is queued for repair (``has_inconsistency``). In
DUAL_WRITE_LEGACY_PRIMARY the secondary side is the unified insert and its history row;
in DUAL_WRITE_UNIFIED_PRIMARY it is the legacy insert, and a unified row without one gets
an id of its own (none can be derived from a legacy id that does not exist) and keeps
its ``legacy_values`` as UNIFIED_ONLY does: a rollback's replay (or ``unistatus repair``)
creates the row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import sqlalchemy as sa

from unistatus.adapter.fast import FastStatusWriter
from unistatus.adapter.held import held_status, rewrite_written
from unistatus.adapter.keys import IdempotencyClaim, KeyTaken
from unistatus.adapter.model import DualWriteResult, Entity, ModeChanged, Plan
from unistatus.adapter.plan import require_copyable
from unistatus.adapter.rows import EntityRows
from unistatus.adapter.sql import BEYOND_RANGE, HotStatements, stored_status
from unistatus.adapter.writes import LockedWriter, legacy_refused_meta, legacy_row, unified_row
from unistatus.db import writer_mark
from unistatus.db.dialect import DialectOps
from unistatus.db.legacy import DATA_COLUMNS, LegacyTable
from unistatus.db.legacy_cast import refuse_what_the_database_would
from unistatus.db.tables import status_history, unified_transactions
from unistatus.db.tables_idempotency import idempotency_keys
from unistatus.domain.consistency import same_value
from unistatus.domain.ids import (
    MAX_LEGACY_ID,
    LegacyRef,
    derive_utx_id,
    new_unified_id,
    require_migratable_id,
    within_utx_range,
)
from unistatus.domain.inputs import require_legacy_values
from unistatus.domain.kept_values import KEPT_KEY, to_json
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import DualWriteMode, LegacySystemType, UnifiedTransactionStatus
from unistatus.domain.transitions import TransitionKind
from unistatus.errors import ConfigError, InputError, StorageError, UnmappableStatusError

__all__ = ["Creator", "NewTransaction", "linked_ref"]


@dataclass(frozen=True)
class NewTransaction:
    """A checked create_transaction request."""

    system: LegacySystemType
    ref: LegacyRef | None  # the existing legacy row to link, if any
    fields: dict[str, Any]  # DATA_COLUMNS, checked
    dst: UnifiedTransactionStatus
    dst_legacy: str
    metadata: dict[str, Any] | None
    triggered_by: str
    claim: IdempotencyClaim | None
    legacy_values: dict[str, Any] = field(default_factory=dict)  # checked, by column name
    # Whether the caller named the status (a link must find it held), and a legacy one.
    status_given: bool = False
    legacy_status_given: bool = False
    # legacy_values as UNIFIED_ONLY keeps them (domain.kept_values). Made with the
    # request, before anything is written, and so in every mode: the mode is known only
    # under its lock, and a value refused there would be refused after the other writes.
    kept: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kept", to_json(self.legacy_values))


def _unified_row_taken(exc: sa.exc.IntegrityError) -> bool:
    """Whether a create's unique violation is on ``unified_transactions`` (its id, or its
    legacy reference): the derived id of the new legacy row is already a unified row's."""
    text = str(exc.orig)
    names = ("unified_transactions", "uq_unified_legacy_ref")
    return any(n in text for n in names) and (
        "UNIQUE constraint failed" in text or "duplicate key value" in text
    )


def linked_ref(lt: LegacyTable, legacy_entity_id: int | None) -> LegacyRef | None:
    """The legacy row a create links (None: it makes a new one); InputError for an id
    that names no row, before anything is written, as :func:`...rows.held_ref` finds no
    entity there: an id the table's key cannot hold (a 4-byte INTEGER) would otherwise
    abort the transaction comparing it."""
    if legacy_entity_id is None:
        return None
    ref = LegacyRef(lt.system, legacy_entity_id)
    if not lt.holds_id(ref.legacy_id):
        raise _no_such_row(ref)
    return ref


def _no_such_row(ref: LegacyRef) -> InputError:
    return InputError(
        f"{ref} does not exist: legacy_entity_id links an existing legacy row (leave it "
        "out to create a new one)"
    )


class Creator:
    """Writes new transactions (and links existing legacy rows) for one adapter."""

    def __init__(
        self,
        statements: HotStatements,
        ops: DialectOps,
        rows: EntityRows,
        writer: LockedWriter,
        mapper: LegacyStatusMapper,
        fast: FastStatusWriter | None,
        check_status: Callable[[LegacySystemType, str], None] | None = None,
    ) -> None:
        self.check_status = check_status
        self.hot = statements
        self.ops = ops
        self.rows = rows
        self.writer = writer
        self.mapper = mapper
        self.fast = fast

    def work(
        self, conn: sa.Connection, mode: DualWriteMode, op_id: str, new: NewTransaction
    ) -> DualWriteResult:
        """One attempt (in the runner's write transaction): the stored result of a key
        seen before, else the create; KeyTaken when a racing call took the key."""
        claim = new.claim
        if claim is not None and claim.look_first:
            replayed = claim.replay(conn)
            if replayed is not None:
                return replayed
        # Every mode makes a legacy row in this status (UNIFIED_ONLY at the replay); a
        # link writes no legacy status.
        if new.ref is None and self.check_status is not None:
            self.check_status(new.system, new.dst_legacy)
        refuse_what_the_database_would(conn, self.hot.legacy[new.system], new.legacy_values)
        try:
            return self._create(conn, mode, op_id, new)
        except sa.exc.IntegrityError as exc:
            if claim is not None and claim.taken(exc):
                claim.look_first = True
                raise KeyTaken from None
            if new.ref is None and _unified_row_taken(exc):
                raise ConfigError(
                    f"the {self.hot.legacy[new.system].name} table gave the new row an id "
                    "whose unified row another transaction holds: a deleted row's id "
                    "handed out again (SQLite reuses the largest rowid unless the id is "
                    "INTEGER PRIMARY KEY AUTOINCREMENT; PostgreSQL after its sequence was "
                    "set back); nothing was written, and that transaction's record is kept "
                    "(`unistatus check` counts it orphan_unified)"
                ) from None
            raise

    def _create(
        self, conn: sa.Connection, mode: DualWriteMode, op_id: str, new: NewTransaction
    ) -> DualWriteResult:
        if new.ref is None and mode.writes_legacy:
            self._require_legacy_values(new)
            if self.ops.supports_dml_cte:
                done = self._in_one_statement(conn, mode, op_id, new)
                if done is not None:
                    return done
        if new.ref is None:
            self.rows.confirm_mode(conn, mode, new.system, locked=False)
            result = self._create_new(conn, mode, op_id, new)
        else:
            entity = self.rows.lock(conn, new.ref, mode)
            if entity is None or entity.legacy is None and entity.unified is None:
                # Never made under the id asked for: an id past the table's sequence
                # would meet a later create of any client (a unique violation).
                raise _no_such_row(new.ref)
            result = self._link_existing(conn, mode, op_id, entity, new)
        if new.claim is not None:
            new.claim.store(conn, result)
        return result

    def _in_one_statement(
        self, conn: sa.Connection, mode: DualWriteMode, op_id: str, new: NewTransaction
    ) -> DualWriteResult | None:
        """The one-statement create. Under ``primary_wins`` in a dual mode it runs in a
        savepoint, and None (take the locked path, which writes the secondary side in a
        savepoint of its own) when the database refuses it."""
        if not mode.is_dual or self.writer.fallback == "strict":
            return self._create_in_one_statement(conn, mode, op_id, new)
        try:
            with conn.begin_nested():
                return self._create_in_one_statement(conn, mode, op_id, new)
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or conn.invalidated:
                raise  # the connection is gone: the whole write is retried or reported
            if isinstance(exc, sa.exc.IntegrityError) and new.claim and new.claim.taken(exc):
                raise
            return None

    def _require_legacy_values(self, new: NewTransaction) -> None:
        lt = self.hot.legacy[new.system]
        require_legacy_values(new.legacy_values, lt.extra_columns, lt.name)

    def _create_new(
        self, conn: sa.Connection, mode: DualWriteMode, op_id: str, new: NewTransaction
    ) -> DualWriteResult:
        system, dst, dst_legacy = new.system, new.dst, new.dst_legacy
        now = self.hot.clock.now()
        result = created(op_id, system, mode, dst, dst_legacy)
        # Every mode makes a legacy row, UNIFIED_ONLY at the rollback's replay.
        self._require_legacy_values(new)
        legacy_id: int | None = None
        stored: str | None = None
        if mode.writes_legacy:
            lt = self.hot.legacy[system]
            row = legacy_row(
                lt, data=new.fields, status=dst_legacy, now=now, extra=new.legacy_values
            )
            values = {column.key: value for column, value in row.items()}

            def write_legacy() -> None:
                nonlocal legacy_id, stored
                insert = sa.insert(lt.table).values(values).returning(lt.id, stored_status(lt))
                # Marked as creating (PostgreSQL): the application's trigger that writes
                # the new row again is not captured before the unified row exists (the
                # capture would create it, and this create's own insert meet it).
                with writer_mark.marked_as(conn, writer_mark.CREATING):
                    legacy_id, stored = conn.execute(insert).one()
                if not within_utx_range(legacy_id):
                    self._refuse_beyond_range(conn, system, legacy_id)

            if mode is DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY:
                # The secondary side: under primary_wins the unified row commits without
                # it, under an id of its own, which the repair queue names.
                result.entity_id = new_unified_id()
                self.writer.secondary(conn, write_legacy, result, Entity(system, None, None, None))
            else:
                write_legacy()
            result.legacy_entity_id = legacy_id
            dst, dst_legacy = held_status(self.mapper, system, (dst, dst_legacy), stored)
            result.status, result.legacy_status = dst, dst_legacy
        if not mode.writes_unified:
            result.entity_id = derive_utx_id(system, legacy_id) if legacy_id else None
            return result
        if legacy_id is not None:
            utx_id = derive_utx_id(system, legacy_id)
        else:  # UNIFIED_ONLY, or the legacy insert was refused (named above)
            utx_id = result.entity_id or new_unified_id()
        result.entity_id = utx_id
        unified = unified_row(
            system,
            utx_id=utx_id,
            legacy_id=legacy_id,
            data=new.fields,
            status=dst.value,
            legacy_status=dst_legacy,
            origin="unified" if mode is DualWriteMode.UNIFIED_ONLY else "dual_write",
            meta=new.metadata,
            created_at=now,
            updated_at=now,
        )
        entity = Entity(system, legacy_id, None, {"id": utx_id})
        history_meta = new.metadata
        if legacy_id is None and new.legacy_values:
            # Kept for the replay, which creates the legacy row (domain.kept_values): in
            # UNIFIED_ONLY, or the legacy insert refused (a rollback carries it there).
            history_meta = {**(new.metadata or {}), KEPT_KEY: new.kept}
        if result.has_inconsistency:  # the legacy insert refused, queued: the row says so
            history_meta = legacy_refused_meta(history_meta, result.error)
        plan = Plan(
            mode,
            entity,
            None,
            dst,
            None,
            dst_legacy,
            TransitionKind.ALLOWED,
            "created",
            new.triggered_by,
            history_meta,
            op_id,
            now,
        )

        def write_unified() -> None:
            conn.execute(sa.insert(unified_transactions).values(unified))
            self.writer.history(conn, plan)

        if mode is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY:
            # The secondary side: under primary_wins the legacy row commits without it.
            self.writer.secondary(conn, write_unified, result, entity)
        else:
            write_unified()
        if mode is DualWriteMode.UNIFIED_ONLY:
            self.writer.pending(conn, utx_id, "create", dst_legacy, op_id, now)
        return result

    def _refuse_beyond_range(
        self,
        conn: sa.Connection,
        system: LegacySystemType,
        legacy_id: int,
        *,
        claim: IdempotencyClaim | None = None,
        op_id: str | None = None,
    ) -> NoReturn:
        """The legacy table handed out an id a UTX id cannot hold: undo what this create
        wrote (the caller's transaction goes on without it, ours is rolled back anyway),
        then refuse. ``op_id``: the one-statement create also wrote its unified row, under
        the placeholder id (``sql.BEYOND_RANGE``), and its history row."""
        if op_id is not None:
            H, U = status_history, unified_transactions
            conn.execute(
                sa.delete(H).where(H.c.transaction_id == BEYOND_RANGE, H.c.operation_id == op_id)
            )
            conn.execute(sa.delete(U).where(U.c.id == BEYOND_RANGE))
        if claim is not None:
            conn.execute(sa.delete(idempotency_keys).where(idempotency_keys.c.key == claim.key))
        lt = self.hot.legacy[system]
        conn.execute(sa.delete(lt.table).where(lt.id == legacy_id))
        require_migratable_id(lt.name, legacy_id)
        raise ConfigError(
            f"{lt.name} handed out id {legacy_id}: a UTX id carries a legacy id of 1 to "
            f"{MAX_LEGACY_ID}; nothing was written"
        )

    def _create_in_one_statement(
        self, conn: sa.Connection, mode: DualWriteMode, op_id: str, new: NewTransaction
    ) -> DualWriteResult:
        """The hot path of a new transaction: one guarded statement (after the mode lock,
        unless the statement takes it itself: ``unistatus_locked_mode(system)``).

        Legacy INSERT (+ unified INSERT + first history row in the dual modes), written
        only while the stored mode is still ``mode``; no row back means it moved. With a
        ``claim``, the idempotency key's row is written by the same statement.
        """
        system, dst, dst_legacy, claim = new.system, new.dst, new.dst_legacy, new.claim
        if not self.hot.locked_mode:
            self.rows.mode_lock(conn, system)
        params: dict[str, Any] = {
            "p_mode": mode.value,
            **{f"c_{name}": new.fields[name] for name in DATA_COLUMNS},
            "c_legacy_status": dst_legacy,
            "c_now": self.hot.clock.now(),
            **{f"x_{i}": value for i, value in enumerate(new.legacy_values.values())},
        }
        extra = tuple(new.legacy_values)
        result = created(op_id, system, mode, dst, dst_legacy)
        keyed = claim is not None
        if claim is not None:
            params.update(claim.params(), c_status=dst.value, c_operation_id=op_id)
        if not mode.writes_unified:
            rows = self.hot.create_legacy(system, keyed=keyed, extra=extra).rows(conn, params)
            if not rows:
                raise ModeChanged
            if keyed and rows[0][1] != 1:
                raise StorageError(f"creating {system.value} stored {rows[0][1]} keys, not 1")
            result.legacy_entity_id = int(rows[0][0])
            if not within_utx_range(result.legacy_entity_id):
                self._refuse_beyond_range(conn, system, result.legacy_entity_id, claim=claim)
            result.entity_id = derive_utx_id(system, result.legacy_entity_id)
            dst, dst_legacy = self._hold_as_stored(conn, result, new, rows[0][-1])
            if self.fast is not None:
                self.fast.remember_created(system, result.legacy_entity_id, dst_legacy)
            return result
        params.update(
            c_status=dst.value,
            c_meta=new.metadata,
            c_operation_id=op_id,
            c_triggered_by=new.triggered_by,
        )
        rows = self.hot.create_dual(system, keyed=keyed, extra=extra).rows(conn, params)
        if not rows:
            raise ModeChanged
        utx_id, legacy_id, history_rows = rows[0][:3]
        if not within_utx_range(int(legacy_id)):
            self._refuse_beyond_range(conn, system, int(legacy_id), claim=claim, op_id=op_id)
        if history_rows != 1 or keyed and rows[0][3] != 1:
            raise StorageError(f"creating {utx_id} wrote {history_rows} history rows, not 1")
        result.entity_id, result.legacy_entity_id = str(utx_id), int(legacy_id)
        dst, dst_legacy = self._hold_as_stored(conn, result, new, rows[0][-1], op_id=op_id)
        if self.fast is not None:
            self.fast.remember_created(system, int(legacy_id), dst_legacy, (str(utx_id), dst.value))
        return result

    def _hold_as_stored(
        self,
        conn: sa.Connection,
        result: DualWriteResult,
        new: NewTransaction,
        stored: str | None,
        *,
        op_id: str | None = None,
    ) -> tuple[UnifiedTransactionStatus, str]:
        """After the one-statement create: where the legacy INSERT stored another status
        than the one sent (:mod:`unistatus.adapter.held`), the result, the idempotency
        key's stored result and (``op_id``: the dual modes) the unified row and its first
        history row, written with the one sent, take it, in the same transaction (a
        second statement only then: the hot path stays one statement). Unless the unified
        row moved on within the statement already (the application's AFTER INSERT trigger
        changed the row again, and the capture mirrored it at the statement's end, from
        the status sent): then all stays as written. The statuses the result says."""
        sent = (new.dst, new.dst_legacy)
        dst, dst_legacy = held_status(self.mapper, new.system, sent, stored)
        if (dst, dst_legacy) == sent:
            return dst, dst_legacy
        legacy = (self.hot.legacy[new.system], result.legacy_entity_id)
        if op_id is not None and not rewrite_written(
            conn, str(result.entity_id), op_id, sent, (dst, dst_legacy), legacy, version=1
        ):
            return new.dst, new.dst_legacy
        result.status, result.legacy_status = dst, dst_legacy
        values = {"status": dst.value, "legacy_status": dst_legacy}
        if new.claim is not None:
            K = idempotency_keys
            conn.execute(sa.update(K).where(K.c.key == new.claim.key).values(values))
        return dst, dst_legacy

    def _link_existing(
        self,
        conn: sa.Connection,
        mode: DualWriteMode,
        op_id: str,
        entity: Entity,
        new: NewTransaction,
    ) -> DualWriteResult:
        """create_transaction for a legacy row that already exists: link it (idempotent)."""
        self.rows.confirm_mode(conn, mode, entity.system, locked=True)
        source = entity.legacy if entity.legacy is not None else entity.unified
        assert source is not None
        for name, value in new.fields.items():
            if not same_value(name, source[name], value):
                raise InputError(
                    f"{entity.system.value.lower()}:{entity.legacy_id} exists with {name}="
                    f"{source[name]}, not {value}"
                )
        if new.legacy_values and entity.legacy is not None:
            self._same_legacy_values(conn, entity, new.legacy_values)
        self._same_status(entity, new)
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
        # What the transaction holds: legacy's value (the unified copy once retired).
        held = (entity.legacy or {}).get("status") or (entity.unified or {}).get("legacy_status")
        result.legacy_status = held
        if entity.unified is not None or not mode.writes_unified:
            if entity.unified is not None:
                result.status = UnifiedTransactionStatus(entity.unified["status"])
            elif held is not None:  # LEGACY_ONLY: no unified row yet, its mapping
                result.status = self.mapper.try_to_unified(entity.system, held)
            return result
        assert entity.legacy is not None
        status = self.mapper.try_to_unified(entity.system, entity.legacy["status"])
        if status is None:
            raise UnmappableStatusError(entity.system.value, entity.legacy["status"])
        require_copyable(entity, mode)
        now = self.hot.clock.now()
        self.writer.upsert_from_legacy(
            conn, entity, status.value, entity.legacy["status"], now, new.metadata
        )
        plan = Plan(
            mode,
            entity,
            None,
            status,
            None,
            entity.legacy["status"],
            TransitionKind.ALLOWED,
            "linked existing legacy row",
            new.triggered_by,
            new.metadata,
            op_id,
            now,
        )
        self.writer.history(conn, plan)
        result.status, result.legacy_status, result.changed = status, entity.legacy["status"], True
        return result

    def _same_status(self, entity: Entity, new: NewTransaction) -> None:
        """Linking a row with a status named: the row must hold it (a link never
        changes a status; ``update_status`` does, under the transition rules)."""
        if not new.status_given:
            return
        ref = f"{entity.system.value.lower()}:{entity.legacy_id}"
        legacy = entity.legacy["status"] if entity.legacy is not None else None
        if new.legacy_status_given and legacy is not None:
            if legacy != new.dst_legacy:
                raise InputError(f"{ref} exists with status {legacy}, not {new.dst_legacy}")
            return
        if entity.unified is not None:
            held: str | None = entity.unified["status"]
        else:
            mapped = self.mapper.try_to_unified(entity.system, legacy) if legacy else None
            held = mapped.value if mapped is not None else legacy
        if held != new.dst.value:
            raise InputError(f"{ref} exists with status {held}, not {new.dst.value}")

    def _same_legacy_values(
        self, conn: sa.Connection, entity: Entity, values: dict[str, Any]
    ) -> None:
        """Linking a legacy row that exists: ``legacy_values`` must be what it holds, as
        the database compares them (a CHAR holds 'AB' as 'AB  ', equal to 'AB')."""
        lt = self.hot.legacy[entity.system]
        columns = [lt.table.c[name] for name in values]
        same = [_held(c, v) for c, v in zip(columns, values.values(), strict=True)]
        stored = conn.execute(sa.select(*columns, *same).where(lt.id == entity.legacy_id)).one()
        for i, (name, value) in enumerate(values.items()):
            held, equal = stored[i], stored[len(columns) + i]
            if not (held == value if equal is None else equal):
                raise InputError(
                    f"{entity.system.value.lower()}:{entity.legacy_id} exists with "
                    f"{name}={held!r}, not {value!r} (legacy_values)"
                )


def _held(column: sa.Column[Any], value: Any) -> sa.ColumnElement[Any]:
    """Whether ``column`` holds ``value``, as the database says (bound as the column's
    type); NULL for a JSON column, which PostgreSQL's ``json`` cannot compare: compared
    as Python values instead."""
    if isinstance(column.type, sa.JSON):
        return sa.null()
    return column.is_not_distinct_from(sa.bindparam(None, value, type_=column.type))


def created(
    op_id: str,
    system: LegacySystemType,
    mode: DualWriteMode,
    dst: UnifiedTransactionStatus,
    dst_legacy: str,
) -> DualWriteResult:
    """The result of a create that succeeded (its ids are filled in as they are known)."""
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
