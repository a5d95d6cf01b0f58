"""How a retirement and its undo go at their locks: one deadline for all of them.

A retirement's (and an undo's) DDL queued behind a long reader of a legacy table held
every writer of it back for each whole attempt (:mod:`unistatus.db.ddl_wait`). Before
each attempt the holders of these tables are read: each legacy table and every table
under it (ALTER TABLE locks them ACCESS EXCLUSIVE), and, while the capture is enabled,
unistatus's control table (its catch-up trigger goes with the columns, ACCESS
EXCLUSIVE, and comes back with them, SHARE ROW EXCLUSIVE); and who holds the migration
lock (another migration, named for what it is).

Inside an attempt, the installation's mode lock is waited for the polite way too
(:mod:`unistatus.db.mode_lock_wait`), for what is left of the same deadline: it was a
fresh ``mode_lock_wait_seconds``, so an attempt that met a write under way after the
attempts had waited aside for a reader took a whole deadline more (and held the
migration lock all along).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.catalog import qualified_name
from unistatus.db.ddl_wait import Changes
from unistatus.db.dialect import ops_for
from unistatus.db.migration_lock import RETIRE_COMMAND, UNDO_COMMAND, migration_lock
from unistatus.db.schema import ChangedTables
from unistatus.db.tables import migration_control
from unistatus.errors import ModeLockBusyError
from unistatus.migration import capture
from unistatus.migration.capture_locks import legacy_tables_changed

__all__ = [
    "DROP_WHAT",
    "RESTORE_WHAT",
    "RETIRE_COMMAND",
    "UNDO_COMMAND",
    "Deadline",
    "politely",
    "retire_changes",
]

# What a retirement, and its undo, does: said when it gives up.
DROP_WHAT = "drop the legacy status columns"
RESTORE_WHAT = "restore the legacy status columns"


def retire_changes(settings: Settings, *, undo: bool = False) -> ChangedTables:
    """The tables a retirement (``undo``: its undo) changes, read on a connection."""

    def changes(conn: sa.Connection) -> Changes:
        legacy = legacy_tables_changed(conn, settings)
        migrating = [migration_lock(conn)]
        if not capture.is_enabled(conn):
            return Changes(exclusive=legacy, advisory=migrating)
        catch_up = [qualified_name(migration_control, conn)]
        if undo:
            return Changes(exclusive=legacy, share_row=catch_up, advisory=migrating)
        return Changes(exclusive=legacy + catch_up, advisory=migrating)

    return changes


@dataclass(frozen=True)
class Deadline:
    """A retirement's (or an undo's) one deadline: ``seconds`` from its start."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return max(0.0, self.started + self.seconds - time.monotonic())

    def waited(self) -> float:
        return time.monotonic() - self.started

    def mode_lock(
        self,
        conn: sa.Connection,
        *,
        share_locked: Sequence[str] = (),
        exclusive_locked: Sequence[str] = (),
    ) -> None:
        """The installation's mode lock exclusive (and those relations' locks, in the
        same attempts: :meth:`~unistatus.db.dialect.DialectOps.mode_exclusive_lock`),
        waited for what is left of this deadline. Given up: a ModeLockBusyError naming
        the holders and how long the command waited in all, nothing changed."""
        try:
            ops_for(conn.engine).mode_exclusive_lock(
                conn,
                None,
                wait_seconds=self.left(),
                share_locked=share_locked,
                exclusive_locked=exclusive_locked,
            )
        except ModeLockBusyError as exc:
            raise ModeLockBusyError(exc.what, self.waited(), exc.holders) from None


def politely(settings: Settings, command: str) -> tuple[Deadline, dict[str, Any]]:
    """How a retirement (or its undo) goes at its tables: its deadline, from now, and the
    arguments of its migration (:func:`unistatus.db.schema.upgrade`, ``downgrade``): each
    attempt after a look at who holds them, never queued behind a long transaction, for
    ``mode_lock_wait_seconds`` in all; then a TableLockBusyError naming the holders and
    ``command`` (:mod:`unistatus.db.ddl_wait`). Its ``before`` takes the mode lock with
    :meth:`Deadline.mode_lock`, within the same deadline."""
    undo = command == UNDO_COMMAND
    deadline = Deadline(settings.mode_lock_wait_seconds)
    return deadline, {
        "deadline_seconds": deadline.seconds,
        "command": command,
        "what": RESTORE_WHAT if undo else DROP_WHAT,
        "changes": retire_changes(settings, undo=undo),
    }
