"""The legacy tables the capture's triggers go on, as the database has them now: those
with a status column (:func:`capturable`), pinned where they are, each with the tables
under it (:func:`under_each`), and the statements that install the triggers on them
(:func:`install_statements`).

Split from :mod:`unistatus.migration.capture`; the DDL itself:
:mod:`unistatus.migration.capture_ddl`.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.legacy import LegacyTable, pinned_legacy_table, resolve_legacy_tables
from unistatus.db.legacy_tree import tables_under
from unistatus.migration.capture_catalog import own_schema
from unistatus.migration.capture_ddl import CaptureDdl
from unistatus.migration.capture_names import Under

__all__ = ["capturable", "install_statements", "under_each"]


def capturable(
    database: sa.Engine | sa.Connection, settings: Settings
) -> tuple[list[LegacyTable], list[str]]:
    """The legacy tables triggers go on (those with a status column), and the rest."""
    tables = resolve_legacy_tables(database, settings, require_status=False)
    present = [lt for lt in tables.values() if lt.status is not None]
    retired = [lt.name for lt in tables.values() if lt.status is None]
    return present, retired


def install_statements(
    ddl: CaptureDdl,
    conn: sa.Connection,
    tables: list[LegacyTable],
    mode_lock_key: int,
    *,
    unified: bool = True,
) -> list[str]:
    """The statements that install the capture on ``tables`` (:meth:`CaptureDdl.install`;
    PostgreSQL: each pinned where it is, with the tables under it)."""
    if conn.dialect.name != "postgresql":
        return ddl.install(tables, unified=unified)
    pinned = [pinned_legacy_table(conn, lt) for lt in tables]
    under = under_each(conn, pinned)
    return ddl.install(pinned, own_schema(conn), mode_lock_key, unified=unified, under=under)


def under_each(conn: sa.Connection, tables: list[LegacyTable]) -> Under:
    """The tables under each legacy table now (PostgreSQL: its partitions, its inheriting
    tables), which get its triggers: a statement that names one fires theirs, not the
    table's. One created since ``enable`` has none until it runs again (``capture
    status`` names them missing)."""
    format_table = conn.dialect.identifier_preparer.format_table
    pinned = [pinned_legacy_table(conn, lt) for lt in tables]
    return {lt.system: tables_under(conn, format_table(lt.table)) for lt in pinned}
