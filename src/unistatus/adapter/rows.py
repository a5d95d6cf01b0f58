"""Finding, reading and locking a transaction's rows: its legacy row and its unified row.

:func:`resolve` turns any entity reference into (system, legacy id, unified id);
:func:`read_entity` reads (or locks, legacy first) both rows of one transaction, for the
adapter's reads and for ``unistatus repair``; :class:`EntityRows` is the adapter's lock
of an entity inside a write, after the mode lock, in the order that keeps writers from
deadlocking each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from unistatus.adapter.model import Entity, Relinked
from unistatus.adapter.sql import HotStatements
from unistatus.adapter.writes import confirm_mode
from unistatus.db.dialect import DialectOps
from unistatus.db.legacy import LegacyTable, legacy_select
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.domain.ids import EntityRef, LegacyRef, UtxId, parse_entity_id
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import EntityNotFoundError

__all__ = [
    "EntityRows",
    "held_ref",
    "read_entity",
    "read_legacy_row",
    "read_unified_row",
    "replay_pending",
    "resolve",
]

U = unified_transactions


def held_ref(entity_id: object, legacy: Mapping[LegacySystemType, LegacyTable]) -> EntityRef:
    """The reference ``entity_id`` names (InputError if malformed); EntityNotFoundError
    for a legacy id its table's key cannot hold (a 4-byte key and an id beyond it: the
    database would refuse the comparison, not find nothing)."""
    ref = parse_entity_id(entity_id)
    named = ref if isinstance(ref, LegacyRef) else ref.derived_ref
    lt = legacy.get(named.system) if named is not None else None
    if named is not None and lt is not None and not lt.holds_id(named.legacy_id):
        raise EntityNotFoundError(str(entity_id))
    return ref


def resolve(conn: sa.Connection, ref: EntityRef) -> tuple[LegacySystemType, int | None, str | None]:
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


def read_legacy_row(
    conn: sa.Connection, lt: LegacyTable, legacy_id: int, *, lock: bool = False
) -> Mapping[str, Any] | None:
    """The legacy row (LEGACY_COLUMNS), ``FOR UPDATE`` when ``lock``; None if missing."""
    q = legacy_select(lt).where(lt.id == legacy_id)
    if lock:
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def unified_clause(
    system: LegacySystemType, legacy_id: int | None, utx_id: str | None
) -> sa.ColumnElement[bool]:
    """The unified row of a legacy row, else the one with that id."""
    if legacy_id is not None:
        return sa.and_(U.c.legacy_system == system.value, U.c.legacy_id == legacy_id)
    assert utx_id is not None
    return U.c.id == utx_id


def read_unified_row(
    conn: sa.Connection,
    where: sa.ColumnElement[bool],
    *,
    lock: bool = False,
    also: sa.ColumnElement[bool] | None = None,
) -> Mapping[str, Any] | None:
    """The whole unified row ``where`` (and ``also``), ``FOR UPDATE`` when ``lock``."""
    q = sa.select(U).where(where)
    if lock:
        q = q.with_for_update()
    if also is not None:
        q = q.where(also)
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def read_entity(
    conn: sa.Connection,
    lt: LegacyTable,
    legacy_id: int | None,
    utx_id: str | None,
    *,
    lock: bool = False,
) -> Entity:
    """Both rows of one transaction: the legacy row (none once its status column is
    retired) and the unified row, by legacy id, else by ``utx_id``.

    ``lock``: both ``FOR UPDATE``, legacy first (the adapter's lock order, so a caller
    never deadlocks with live writes); the caller takes the mode lock before.
    """
    legacy = (
        read_legacy_row(conn, lt, legacy_id, lock=lock)
        if legacy_id is not None and lt.status is not None
        else None
    )
    unified = None
    if legacy_id is not None or utx_id is not None:
        unified = read_unified_row(conn, unified_clause(lt.system, legacy_id, utx_id), lock=lock)
    return Entity(lt.system, legacy_id, legacy, unified)


def replay_pending(conn: sa.Connection, utx_id: str) -> bool:
    """Whether a change of this transaction awaits the replay to legacy."""
    q = sa.select(pending_legacy_changes.c.id).where(
        pending_legacy_changes.c.transaction_id == utx_id,
        pending_legacy_changes.c.replayed_at.is_(None),
    )
    return conn.execute(q.limit(1)).first() is not None


class EntityRows:
    """The adapter's reads and locks of an entity, on its hot statements."""

    def __init__(self, statements: HotStatements, ops: DialectOps) -> None:
        self.hot = statements
        self.ops = ops

    def mode_lock(self, conn: sa.Connection, system: LegacySystemType) -> None:
        """Take ``system``'s mode lock shared (held until commit; a switch of that
        system waits for it)."""
        self.ops.mode_shared_lock(conn, system)

    def confirm_mode(
        self, conn: sa.Connection, mode: DualWriteMode, system: LegacySystemType, *, locked: bool
    ) -> None:
        """Re-read ``system``'s mode once its mode lock is held; a switch in between
        means retry."""
        if not locked:
            self.mode_lock(conn, system)
        confirm_mode(conn, mode, system)

    def read(self, conn: sa.Connection, ref: EntityRef) -> Entity:
        """Both rows, unlocked; an entity without rows when there is none."""
        try:
            system, legacy_id, utx_id = resolve(conn, ref)
        except EntityNotFoundError:
            derived = ref.derived_ref if isinstance(ref, UtxId) else None
            return Entity(derived.system if derived else LegacySystemType.CASHOUT, None, None, None)
        # Once the legacy status column is retired, reads come from the unified row only.
        return read_entity(conn, self.hot.legacy[system], legacy_id, utx_id)

    def lock(self, conn: sa.Connection, ref: EntityRef, mode: DualWriteMode) -> Entity:
        """Lock the entity: its legacy row while legacy is written, else its unified row.

        Writers always lock legacy before unified, so writers never deadlock each other.
        :class:`Relinked` when the unified row, once locked, names a legacy row the
        unlocked look-up did not find (created and linked meanwhile): never written on
        as if it had none.
        """
        system, legacy_id, utx_id = resolve(conn, ref)
        if not mode.writes_legacy or legacy_id is None:
            unified = self._lock_unified(conn, system, unified_clause(system, legacy_id, utx_id))
            if legacy_id is None and unified is not None and unified["legacy_id"] is not None:
                raise Relinked
            legacy = None
            if legacy_id is not None and (unified is None or mode.writes_legacy):
                legacy = read_legacy_row(conn, self.hot.legacy[system], legacy_id)
            if unified is None and legacy is None and mode.writes_legacy and utx_id:
                raise EntityNotFoundError(utx_id)
            return Entity(system, legacy_id, legacy, unified, known_id=utx_id)
        if mode.writes_unified:
            both = self._lock_both(conn, system, legacy_id)
            if both is not None:
                return both
        rows = self.hot.lock_legacy(system).rows(conn, {"p_legacy_id": legacy_id})
        row = Entity.from_row(system, legacy_id, rows[0]).legacy if rows else None
        # LEGACY_ONLY leaves unified alone, so it need not read it (unless the legacy
        # row is missing, to tell "unknown" from "born unified"), but for its id.
        unified = (
            read_unified_row(conn, unified_clause(system, legacy_id, None))
            if (row is not None and mode.writes_unified) or (row is None and utx_id)
            else None
        )
        # An id derived from the legacy id was given, not looked up: the unified row of
        # a transaction born unified has another (the answer gives the row's own).
        known = None if isinstance(ref, UtxId) and ref.derived_ref is not None else utx_id
        if known is None and unified is None and row is not None:
            known = conn.execute(
                sa.select(U.c.id).where(unified_clause(system, legacy_id, None))
            ).scalar_one_or_none()
        return Entity(system, legacy_id, row, unified, known_id=known)

    def _lock_unified(
        self, conn: sa.Connection, system: LegacySystemType, where: sa.ColumnElement[bool]
    ) -> Mapping[str, Any] | None:
        """The unified row, locked after the mode lock (taken by the same statement)."""
        also = self.ops.mode_lock_clause(system)
        return read_unified_row(conn, where, lock=True, also=also)

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
