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
from unistatus.db.revisions import columns_retired
from unistatus.errors import ConfigError
from unistatus.migration.capture_catalog import own_schema
from unistatus.migration.capture_ddl import CaptureDdl
from unistatus.migration.capture_names import Under

__all__ = [
    "capturable",
    "install_statements",
    "refuse_status_columns_gone",
    "status_columns_gone",
    "under_each",
]


def capturable(
    database: sa.Engine | sa.Connection, settings: Settings
) -> tuple[list[LegacyTable], list[str]]:
    """The legacy tables triggers go on (those with a status column), and the rest."""
    tables = resolve_legacy_tables(database, settings, require_status=False)
    present = [lt for lt in tables.values() if lt.status is not None]
    retired = [lt.name for lt in tables.values() if lt.status is None]
    return present, retired


def status_columns_gone(conn: sa.Connection, without: list[str]) -> list[str]:
    """Of the legacy tables ``without`` their status column, those whose column
    unistatus did not retire (renamed or dropped behind its back: PostgreSQL refuses a
    type change of a trigger's column, not a rename). Taken for a retirement, their
    triggers were dropped by ``enable``, and every later write went unseen."""
    return [] if not without or columns_retired(conn) else list(without)


def refuse_status_columns_gone(conn: sa.Connection, settings: Settings, gone: list[str]) -> None:
    """ConfigError naming the tables of :func:`status_columns_gone`."""
    if not gone:
        return
    named = ", ".join(
        f"{name} ({settings.legacy_tables[system].status!r})"
        for system, spec in settings.legacy_tables.items()
        for name in gone
        if spec.table == name
    )
    raise ConfigError(
        f"the status column of {named or ', '.join(gone)} is not there, and unistatus did "
        "not retire it (renamed or dropped behind its back?): the capture cannot watch the "
        "table without it, and its triggers, which name it, fail every write there. Rename "
        "it back, or name the new column in the configuration ([legacy_tables.<SYSTEM>] "
        "status = ...), then `unistatus capture enable`; nothing was changed"
    )


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
