"""The tables a retirement and its undo change, as their attempts look at them first.

A retirement's (and an undo's) DDL queued behind a long reader of a legacy table held
every writer of it back for each whole attempt (:mod:`unistatus.db.ddl_wait`). Before
each attempt the holders of these tables are read: each legacy table and every table
under it (ALTER TABLE locks them ACCESS EXCLUSIVE), and, while the capture is enabled,
unistatus's control table (its catch-up trigger goes with the columns, ACCESS
EXCLUSIVE, and comes back with them, SHARE ROW EXCLUSIVE).
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.catalog import qualified_name
from unistatus.db.ddl_wait import Changes
from unistatus.db.schema import ChangedTables
from unistatus.db.tables import migration_control
from unistatus.migration import capture
from unistatus.migration.capture_locks import legacy_tables_changed

__all__ = ["RETIRE_COMMAND", "UNDO_COMMAND", "retire_changes"]

RETIRE_COMMAND = "unistatus retire legacy-columns"
UNDO_COMMAND = f"{RETIRE_COMMAND} --undo"


def retire_changes(settings: Settings, *, undo: bool = False) -> ChangedTables:
    """The tables a retirement (``undo``: its undo) changes, read on a connection."""

    def changes(conn: sa.Connection) -> Changes:
        legacy = legacy_tables_changed(conn, settings)
        if not capture.is_enabled(conn):
            return Changes(exclusive=legacy)
        catch_up = [qualified_name(migration_control, conn)]
        if undo:
            return Changes(exclusive=legacy, share_row=catch_up)
        return Changes(exclusive=legacy + catch_up)

    return changes
