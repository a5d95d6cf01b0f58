"""The tables `capture enable` and `capture disable` change, as their attempts look at
them first (:mod:`unistatus.db.ddl_wait`).

Behind a writer idle in its transaction on a legacy table, `capture enable` queued its
CREATE TRIGGER for the whole lock_timeout, every writer of the table behind it, and then
failed with a bare "lock timeout". Before each attempt the holders of these tables are
read: the tables of the triggers installed now (DROP TRIGGER locks them ACCESS
EXCLUSIVE) and, to install, each legacy table and every table under it, the control
table (the catch-up) and unified_transactions (the detector of direct writes), which
CREATE TRIGGER locks SHARE ROW EXCLUSIVE.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.catalog import qualified_name, qualify
from unistatus.db.ddl_wait import Changes
from unistatus.db.legacy_reflect import legacy_table_sql
from unistatus.db.legacy_tree import tables_under
from unistatus.db.tables import migration_control, unified_transactions
from unistatus.migration.capture_names import Trigger

__all__ = ["capture_changes", "legacy_tables_changed"]


def legacy_tables_changed(conn: sa.Connection, settings: Settings) -> list[str]:
    """Each legacy table and every table under it (partitions, inheriting tables), as
    SQL names them."""
    names = []
    for spec in settings.legacy_tables.values():
        name = legacy_table_sql(conn, spec)
        names.append(name)
        names += [qualify(t, s, conn.dialect) for s, t in tables_under(conn, name)]
    return names


def capture_changes(
    conn: sa.Connection, settings: Settings, installed: list[Trigger], *, install: bool
) -> Changes:
    """What an attempt of the capture's (``install``: enable) locks, ``installed`` the
    triggers it drops first."""
    dropped = list(dict.fromkeys(t.on for t in installed if t.on))
    if not install:
        return Changes(exclusive=dropped)
    created = legacy_tables_changed(conn, settings)
    created += [qualified_name(t, conn) for t in (migration_control, unified_transactions)]
    return Changes(exclusive=dropped, share_row=[n for n in created if n not in dropped])
