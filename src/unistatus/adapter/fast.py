"""The adapter's one- or two-round-trip status change on PostgreSQL.

An unlocked read (or a cached state), a plan, then one guarded statement that writes
legacy, unified and history or nothing; whatever it cannot settle goes to the locked
path. Why this is safe, and retries: docs/adapter.md, "The fast path".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from unistatus.adapter.held import held_status, hold_change
from unistatus.adapter.model import Entity, Fallback, Plan, WriteLost
from unistatus.adapter.operation_connection import holding
from unistatus.adapter.plan import one_statement
from unistatus.adapter.sql import HotStatements
from unistatus.adapter.writes import one_statement_params
from unistatus.db.dialect import DialectOps
from unistatus.db.failures import describe
from unistatus.db.isolation import read_committed_by_default
from unistatus.db.prepared import Prepared
from unistatus.db.target import check_installed
from unistatus.domain.ids import EntityRef, LegacyRef
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.domain.transitions import TransitionKind
from unistatus.errors import UnistatusError

__all__ = ["FastStatusWriter", "locked_mode_available"]

log = logging.getLogger("unistatus.adapter.fast")

Key = tuple[LegacySystemType, int]


class FastStatusWriter:
    """Status changes in two autocommit round trips, for one adapter (docs/adapter.md).

    Works with the adapter's ``engine`` (its pool), its prepared ``statements`` and its
    ``fallback``; the caller hands each change its plan as a function of the state read.
    """

    def __init__(
        self,
        engine: sa.Engine,
        statements: HotStatements,
        fallback: Fallback,
        mapper: LegacyStatusMapper,
        cache_size: int = 0,
        holding: frozenset[LegacySystemType] = frozenset(),
    ) -> None:
        self.hot = statements
        self.fallback: Fallback = fallback
        self.mapper = mapper
        # The adapter's pool, checked out in autocommit (and reset on return).
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.driver_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        # State after this adapter's last write to an entity, oldest first. Only ever a
        # guess: the guarded write checks it. (dict operations are atomic under the GIL;
        # eviction may race, which at worst drops one more entry.)
        self.cache_size = cache_size
        self.known: dict[Key, Entity] = {}
        self.hits = 0
        self.misses = 0
        # Systems whose legacy table may store another status than the one written (the
        # application's BEFORE UPDATE trigger: db.app_triggers): found at the start, or
        # learned from a held change. Their changes that write unified take the locked
        # path outside a caller's transaction, so that the hold shares the change's
        # transaction (this path's guarded statement commits on its own).
        self.holding: set[LegacySystemType] = set(holding)

    def update(
        self,
        ref: EntityRef,
        mode: DualWriteMode,
        op_id: str,
        plan: Callable[[Entity], Plan],
        caller: sa.Connection | None = None,
    ) -> Plan | None:
        """Apply the change and return its plan, or None: take the locked path.

        ``caller``: the caller's connection, in its transaction (``connection=``), instead
        of one of the pool in autocommit; a guarded write that declines writes nothing
        there either, and its mode lock is held until the caller's transaction ends.
        """
        located = _legacy_location(ref)
        if located is None or not self._eligible(mode, located[0]):
            return None
        if caller is None and mode.writes_unified and located[0] in self.holding:
            return None  # the locked path: the change and its hold in one transaction
        if caller is not None:
            return self._update(caller, located, mode, op_id, plan, autocommit=False)
        # Held: a status its column refuses is looked up again on it, not on a second
        # connection of the pool (adapter.operation_connection).
        with self.engine.connect() as conn, holding(conn):
            if not read_committed_by_default(conn):
                return None  # its snapshot would predate the mode lock it waits for
            return self._update(conn, located, mode, op_id, plan, autocommit=True)

    def _update(
        self,
        conn: sa.Connection,
        located: Key,
        mode: DualWriteMode,
        op_id: str,
        plan: Callable[[Entity], Plan],
        *,
        autocommit: bool,
    ) -> Plan | None:
        known = self.known.pop(located, None)
        found: Entity | None = None
        if known is not None and self._usable(known, mode):
            done, found = self._try(conn, known, op_id, plan, autocommit)
            self.hits += done is not None
            if done is not None:
                return done
        self.misses += 1
        # The refused write said what it found (no extra read), else read.
        entity = found or self._read(conn, *located, mode)
        if entity is None or entity.legacy is None:
            return None  # a row is gone (or never was): the locked path says what
        return self._try(conn, entity, op_id, plan, autocommit)[0]

    def forget(self, ref: EntityRef) -> None:
        """Drop what is remembered of ``ref``: a change made in a caller's transaction
        that the caller rolled back (else the next change costs a refused write)."""
        located = _legacy_location(ref)
        if located is not None:
            self.known.pop(located, None)

    def remember_created(
        self,
        system: LegacySystemType,
        legacy_id: int,
        legacy_status: str,
        unified: tuple[str, str] | None = None,
    ) -> None:
        """A transaction this adapter just created: its legacy status, and its unified
        row's (id, status) when the mode wrote one (its version is then 1)."""
        row = None
        if unified is not None:
            utx_id, status = unified
            row = {"id": utx_id, "status": status, "legacy_status": legacy_status, "version": 1}
        self._remember(Entity(system, legacy_id, {"status": legacy_status}, row))

    def _try(
        self,
        conn: sa.Connection,
        entity: Entity,
        op_id: str,
        plan: Callable[[Entity], Plan],
        autocommit: bool,
    ) -> tuple[Plan | None, Entity | None]:
        """Plan from ``entity`` and write if the rows still hold it: (the plan, None);
        otherwise (None, the state the refused write found, if it got that far)."""
        try:
            p = plan(entity)
        except UnistatusError:
            return None, None  # refused on unlocked data: the locked path confirms or not
        p.operation_id = op_id
        if p.kind is TransitionKind.NOOP or not one_statement(
            p, self.hot.ops.supports_dml_cte, self.fallback
        ):
            return None, None
        found, stored = self._write(conn, p)
        if found is not None:
            return None, found
        self._hold(conn, p, stored, autocommit)
        self._remember_written(p)
        return p, None

    def _hold(self, conn: sa.Connection, p: Plan, stored: str | None, autocommit: bool) -> None:
        """:func:`~unistatus.adapter.held.hold_change` after the guarded statement. In
        the caller's transaction, one more statement of it. In autocommit the change has
        committed already: the rewrite is a second transaction, and if it fails (a lock
        timeout, a lost connection) the change stands as written, for ``check`` and
        ``repair``, never retried (the retry would plan from the status held). In autocommit
        only a table whose trigger the adapter did not find at its start comes this far,
        with its first held change: the system is then known to hold (:attr:`holding`)."""
        lt = self.hot.legacy[p.entity.system]
        sent = (p.dst, p.dst_legacy)
        if held_status(self.mapper, p.entity.system, sent, stored) != sent:
            self.holding.add(p.entity.system)
        if not autocommit:
            hold_change(conn, self.mapper, p, stored, lt)
            return
        try:
            hold_change(conn, self.mapper, p, stored, lt)
        except (sa.exc.SQLAlchemyError, self.driver_error) as exc:
            log.warning(
                "%s: legacy stored %r (the application's trigger), and unified could not "
                "take it (%s): left for check and repair",
                p.entity.utx_id,
                stored,
                describe(exc),
            )

    def _usable(self, known: Entity, mode: DualWriteMode) -> bool:
        return known.unified is not None or not mode.writes_unified

    def _remember_written(self, p: Plan) -> None:
        e = p.entity
        assert e.legacy_id is not None
        unified = None
        if e.unified is not None and p.mode.writes_unified:
            unified = {
                "id": e.unified["id"],
                "status": p.dst.value,
                "legacy_status": p.dst_legacy,
                "version": e.unified["version"] + 1,
            }
        self._remember(Entity(e.system, e.legacy_id, {"status": p.dst_legacy}, unified))

    def _remember(self, entity: Entity) -> None:
        if not self.cache_size:
            return
        assert entity.legacy_id is not None
        known = self.known
        known[(entity.system, entity.legacy_id)] = entity
        while len(known) > self.cache_size:
            try:
                del known[next(iter(known))]
            except (KeyError, RuntimeError, StopIteration):  # another thread evicted
                break

    def _eligible(self, mode: DualWriteMode, system: LegacySystemType) -> bool:
        if not mode.writes_legacy or self.hot.legacy[system].status is None:
            return False
        return not mode.writes_unified or self.fallback == "strict"

    def _read(
        self, conn: sa.Connection, system: LegacySystemType, legacy_id: int, mode: DualWriteMode
    ) -> Entity | None:
        hot = self.hot
        read = hot.read_both(system) if mode.writes_unified else hot.read_legacy(system)
        rows = read.rows(conn, {"p_legacy_id": legacy_id})
        # None: no legacy row, or (dual modes) no unified row yet.
        return Entity.from_row(system, legacy_id, rows[0]) if rows else None

    def _write(self, conn: sa.Connection, p: Plan) -> tuple[Entity | None, str | None]:
        """The guarded statement: (None, the status legacy stored) when it wrote, else
        (the state it found instead, None): unlocked, as of its start; an entity without
        rows if they are gone."""
        hot, e = self.hot, p.entity
        assert e.legacy is not None and e.legacy_id is not None
        params: dict[str, Any] = {
            **one_statement_params(p),
            "p_src_legacy": e.legacy["status"],
        }
        if not p.mode.writes_unified:
            rows = _sent(hot.guarded_legacy_write(e.system), conn, params)
            if rows and rows[0][0] == 1:
                e.known_id = rows[0][3]  # the answer's id (None: its derived one)
                return None, rows[0][2]
            legacy = {"status": rows[0][1]} if rows else None
            return Entity(e.system, e.legacy_id, legacy, None), None
        assert e.unified is not None
        params["p_src_status"] = e.unified["status"]
        params["p_src_unified_legacy"] = e.unified["legacy_status"]
        params["p_version"] = e.unified["version"]
        rows = _sent(hot.guarded_dual_write(e.system), conn, params)
        if rows and rows[0][0] == 1:
            return None, rows[0][5]
        if not rows:
            return Entity(e.system, e.legacy_id, None, None), None
        _, legacy_status, status, unified_legacy, version, _ = rows[0]
        unified = {
            "id": e.unified["id"],
            "status": status,
            "legacy_status": unified_legacy,
            "version": version,
        }
        return Entity(e.system, e.legacy_id, {"status": legacy_status}, unified), None


def _sent(statement: Prepared, conn: sa.Connection, params: dict[str, Any]) -> list[Any]:
    """Run a guarded write (autocommit): a connection lost meanwhile is :class:`WriteLost`,
    since the statement may have committed before the reply was lost."""
    try:
        return statement.rows(conn, params)
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise WriteLost(exc) from exc
        raise


def _legacy_location(ref: EntityRef) -> tuple[LegacySystemType, int] | None:
    """(system, legacy id) when the reference names them without a lookup."""
    legacy = ref if isinstance(ref, LegacyRef) else ref.derived_ref
    return (legacy.system, legacy.legacy_id) if legacy is not None else None


def locked_mode_available(engine: sa.Engine, ops: DialectOps) -> bool:
    """Whether status changes may take this fast path: PostgreSQL with
    ``unistatus_locked_mode(system)`` (revision 0015) installed. The installation is
    checked first (a ConfigError where there is none, where the search_path does not
    reach it, or where it reaches another's tables first): its function found through
    the search_path would be another installation's too."""
    if not ops.supports_dml_cte:
        return False
    check_installed(engine)
    with engine.connect() as conn:
        if ops.has_locked_mode_function(conn):
            return True
    log.warning(
        "unistatus_locked_mode(system) is missing (schema older than revision 0015; `unistatus "
        "init` installs it): status changes take the locked path, as correct, only slower"
    )
    return False
