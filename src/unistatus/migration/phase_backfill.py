"""What entering phase 2 (backfill) does to the backfill: the workers an earlier
rollback paused go on (:func:`unistatus.migration.phases.advance`)."""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.backfill import resume
from unistatus.backfill.control import pause_key
from unistatus.db.mode_reads import read_value
from unistatus.db.system_keys import systems_of
from unistatus.domain.statuses import LegacySystemType

__all__ = ["resume_backfill"]


def resume_backfill(engine: sa.Engine, actor: str, system: LegacySystemType | None) -> list[str]:
    """Entering phase 2 lets backfill workers paused by an earlier rollback go on:
    ``system``'s (a pause of every system stays: it holds the others too); None: all."""
    with engine.connect() as conn:
        paused = {
            s for s in (None, *systems_of(system)) if read_value(conn, pause_key(s)) == "true"
        }
    own = paused - {None} if system is not None else paused
    if own:
        resume(engine, actor=actor, reason="entering phase 2 (backfill)", system=system)
    notes = ["backfill workers resumed (they were paused by a rollback)"] if own else []
    if system is not None and None in paused:
        notes.append("the backfill of every system stays paused: `unistatus backfill resume`")
    return notes
