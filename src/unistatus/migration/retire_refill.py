"""What the undo of a retirement refills each legacy status from, checked first.

The undo (downgrade 0006) puts each legacy row's status back from its unified row's
``legacy_status``. A legacy row without a unified row gets NULL: one deleted since the
retirement (a `backfill undo` in phase 4 had deleted 499,999 unified rows: every such
status lost from the live database, the undo saying "restored"; found by a probe), or
one inserted behind unistatus while the columns were retired (it never had a status).
The undo goes on (a rollback out of phase 4 must never be blocked), and says how many
rows of which table it left NULL, and why, in its notes.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U

__all__ = ["rows_without_a_status"]

log = logging.getLogger("unistatus.migration.retire")


def rows_without_a_status(conn: sa.Connection, settings: Settings) -> list[str]:
    """A note per legacy table with rows no unified row holds the status of (read in
    ``conn``'s transaction: the undo's own, its lock held), logged; none when every row
    has one."""
    notes: list[str] = []
    for system, lt in resolve_legacy_tables(conn, settings, require_status=False).items():
        legacy_id = lt.table.c[lt.id.name]
        held = sa.exists().where(U.c.legacy_system == system.value, U.c.legacy_id == legacy_id)
        q = sa.select(sa.func.count()).select_from(lt.table).where(~held)
        count = int(conn.execute(q).scalar_one())
        if count:
            notes.append(
                f"{count} legacy rows of {lt.name} have no unified row to take their status "
                "from: left NULL (their unified rows deleted since the retirement, or the rows "
                "inserted behind unistatus while the columns were retired); find them with "
                f"`unistatus check --system {system.value.lower()}` (missing_unified); the "
                "statuses at the retirement are in the archive it verified"
            )
    for note in notes:  # the log too: an undo run inside a rollback says it there
        log.warning("retire --undo: %s", note)
    return notes
