"""What the undo of a retirement refills each legacy status from, checked first.

The undo (downgrade 0006) puts each legacy row's status back from its unified row's
``legacy_status``. A legacy row whose unified row is gone (deleted since the
retirement) would get NULL: the undo said "restored", exit 0, and every such status was
lost from the live database (a `backfill undo` in phase 4 had deleted 499,999 unified
rows; found by a probe). The undo is refused then, before anything changes, naming how
many rows of which table.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U
from unistatus.errors import GateError

__all__ = ["refuse_rows_without_a_status"]


def refuse_rows_without_a_status(conn: sa.Connection, settings: Settings) -> None:
    """GateError naming the legacy tables with rows no unified row holds the status of
    (read in ``conn``'s transaction: the undo's own, its lock held)."""
    missing: list[str] = []
    for system, lt in resolve_legacy_tables(conn, settings, require_status=False).items():
        legacy_id = lt.table.c[lt.id.name]
        held = sa.exists().where(U.c.legacy_system == system.value, U.c.legacy_id == legacy_id)
        q = sa.select(sa.func.count()).select_from(lt.table).where(~held)
        count = int(conn.execute(q).scalar_one())
        if count:
            missing.append(f"{count} legacy rows of {lt.name} have no unified row")
    if missing:
        raise GateError(
            f"cannot restore the legacy status columns: {'; '.join(missing)} to take their "
            "status from (deleted since the retirement): the refill would leave those "
            "statuses NULL. Nothing was restored. Bring their unified rows back first (from "
            "a backup of the database; their legacy statuses at the retirement are in the "
            "archive it verified: `unistatus archive restore` into a scratch database shows "
            "them), then run the undo again"
        )
