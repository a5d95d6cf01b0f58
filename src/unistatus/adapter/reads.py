"""The adapter's reads: a transaction's status from the authoritative side (with the
shadow read that compares the other side) and one transaction's consistency.

Split from ``core`` (the facade), whose ``get_transaction_status`` and
``check_consistency`` call :class:`StatusReads`; the writes stay there.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from unistatus.adapter import judge
from unistatus.adapter.caller import CallerConnection, CallerTransactions
from unistatus.adapter.model import Entity
from unistatus.adapter.rows import EntityRows, held_ref
from unistatus.adapter.runner import CONNECTION_LIMIT, Runner
from unistatus.adapter.sql import HotStatements
from unistatus.db.mode_reads import read_mode
from unistatus.domain import consistency
from unistatus.domain.ids import LegacyRef
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import DualWriteMode, LegacySystemType, UnifiedTransactionStatus
from unistatus.errors import (
    ConnectionLimitError,
    EntityNotFoundError,
    InputError,
    LegacyStatusRetiredError,
    StorageError,
)

__all__ = ["StatusReads"]

# The facade's logger: a shadow mismatch is logged as the adapter's, as before the split.
log = logging.getLogger("unistatus.adapter.core")


class StatusReads:
    """The reads of one adapter; ``follow_restored_columns`` is the adapter's (reads
    pick up legacy status columns a rollback restored, as writes do)."""

    def __init__(
        self,
        runner: Runner,
        caller: CallerTransactions,
        rows: EntityRows,
        hot: HotStatements,
        mapper: LegacyStatusMapper,
        follow_restored_columns: Callable[[], None],
    ) -> None:
        self._runner = runner
        self._caller = caller
        self._rows = rows
        self.hot = hot
        self.mapper = mapper
        self._follow_restored_columns = follow_restored_columns
        self.shadow_mismatches = 0

    def status(
        self,
        entity_id: object,
        connection: CallerConnection | None,
        shadow_read_rate: float,
    ) -> tuple[UnifiedTransactionStatus | None, dict[str, Any]]:
        """The status from the authoritative side, with ``metadata['source']``.

        With ``connection``: read in the caller's transaction (its own writes included).
        """
        started = time.perf_counter()
        ref = held_ref(entity_id, self.hot.legacy)
        system = ref.system if isinstance(ref, LegacyRef) else None
        mode = self._runner.last_modes[system] if system else self._runner.last_mode
        self._follow_restored_columns()
        mismatch = False

        def entity_and_mode(conn: sa.Connection) -> tuple[Entity, DualWriteMode | None]:
            # The system's mode: the caller's transaction reads it there (its own
            # switch, if any, included); else as this process last read it.
            entity = self._rows.read(conn, ref)
            return entity, read_mode(conn, entity.system) if connection is not None else None

        try:
            entity, read = self._caller.read(
                connection, f"cannot read {entity_id}", entity_and_mode
            )
            system = entity.system
            mode = read if read is not None else self._runner.mode(system)
        except StorageError as exc:
            self._runner.emit(
                "get_transaction_status",
                mode,
                False,
                started,
                error=str(exc),
                system=system,
                error_kind=CONNECTION_LIMIT if isinstance(exc, ConnectionLimitError) else None,
            )
            raise
        meta: dict[str, Any] = {"entity_id": str(entity_id), "mode": mode.value}
        if entity.legacy is None and entity.unified is None:
            self._runner.emit("get_transaction_status", mode, True, started, system=system)
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
        if mode.is_dual and shadow_read_rate and random.random() < shadow_read_rate:
            mismatch = self._shadow_compare(entity, use_unified, meta)
        self._runner.emit(
            "get_transaction_status",
            mode,
            True,
            started,
            shadow_mismatch=mismatch,
            system=system,
        )
        return status, meta

    def consistency(
        self,
        entity_id: object,
        system_type: LegacySystemType | str | None,
        connection: CallerConnection | None,
    ) -> dict[str, Any]:
        """``{"consistent": bool, "inconsistencies": [...]}`` for one transaction
        (with ``connection``: as the caller's transaction sees it)."""
        ref = held_ref(entity_id, self.hot.legacy)
        self._follow_restored_columns()

        def judged(conn: sa.Connection) -> tuple[Entity, list[consistency.Inconsistency]]:
            return (entity := self._rows.read(conn, ref)), judge.inconsistencies(conn, entity)

        entity, found = self._caller.read(connection, f"cannot read {entity_id}", judged)
        if entity.legacy is None and entity.unified is None:
            raise EntityNotFoundError(str(entity_id))
        if entity.legacy_id is not None and self.hot.legacy[entity.system].status is None:
            raise LegacyStatusRetiredError(f"{entity_id} cannot be judged")
        if system_type is not None and LegacySystemType.parse(system_type) is not entity.system:
            raise InputError(f"{entity_id} belongs to {entity.system.value}, not {system_type}")
        return {
            "entity_id": str(entity_id),
            "transaction_id": entity.utx_id,
            "system": entity.system.value,
            "legacy_id": entity.legacy_id,
            "consistent": not found,
            "inconsistencies": [i.as_dict() for i in found],
        }

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
