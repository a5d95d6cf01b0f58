"""One transaction judged as ``unistatus check`` judges it (the adapter's
``check_consistency``): its legacy and unified rows compared, legacy read as the replay
will leave it while its system is in UNIFIED_ONLY, and a legacy row acknowledged but refused by the database counted
``missing_legacy``."""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.adapter.model import Entity
from unistatus.adapter.rows import replay_pending
from unistatus.db.mode_reads import read_mode
from unistatus.db.queued_legacy import legacy_missing
from unistatus.domain import consistency
from unistatus.domain.consistency import Inconsistency, InconsistencyKind
from unistatus.domain.statuses import DualWriteMode

__all__ = ["inconsistencies"]


def inconsistencies(conn: sa.Connection, entity: Entity) -> list[Inconsistency]:
    """Every way ``entity``'s two rows disagree, as read on ``conn`` (empty: consistent)."""
    legacy, unified = entity.legacy, entity.unified
    if unified is None:
        return consistency.compare(entity.system, legacy, unified)
    utx_id = str(unified["id"])
    if legacy is None:
        if unified.get("legacy_id") is None and legacy_missing(conn, utx_id):
            kind = InconsistencyKind.MISSING_LEGACY
            return [Inconsistency(kind, entity.system.value, None, utx_id)]
    elif frozen(conn, entity) and replay_pending(conn, utx_id):
        # Legacy is frozen until the replay: compare with what it will hold (the same
        # projection as the bulk check, unistatus.migration.unreplayed).
        legacy = {**legacy, "status": unified["legacy_status"]}
    return consistency.compare(entity.system, legacy, unified)


def frozen(conn: sa.Connection, entity: Entity) -> bool:
    """Whether ``entity``'s legacy is frozen by design: its system is in UNIFIED_ONLY. In
    any other mode a change never replayed leaves legacy stale, and the pair is judged as
    it is."""
    return read_mode(conn, entity.system) is DualWriteMode.UNIFIED_ONLY
