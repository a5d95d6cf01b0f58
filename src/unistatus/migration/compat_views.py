"""Compatibility views for readers that still select the legacy status after retirement.

``retire legacy-columns --compat-views`` (:func:`unistatus.migration.retire.retire_legacy_columns`)
leaves, on PostgreSQL, a schema :data:`COMPAT_SCHEMA` holding one view per legacy table,
under the table's own name: the table's columns as the database has them, and the
retired status column computed from ``unified_transactions.legacy_status`` (the exact
legacy value, kept by every write). A reader that puts the schema first in its
``search_path`` reads them instead of the tables, unchanged. The views are generated
from the reflected tables and the configured column names, never written by hand.
Dropped by ``--undo`` (and by every undo of the retirement). See docs/retire.md.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.binding import (
    connected,
    qualify,
    schema_of,
    translate_map,
    unbound_connection,
)
from unistatus.db.control import write_value
from unistatus.db.dialect import ops_for
from unistatus.db.legacy import pinned_legacy_table, resolve_legacy_tables
from unistatus.db.legacy_types import Named
from unistatus.db.search_path import COMPAT_SCHEMA
from unistatus.db.tables import unified_transactions
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError

__all__ = [
    "COMPAT_SCHEMA",
    "column_order",
    "compat_views",
    "create_compat_views",
    "create_compat_views_in",
    "drop_compat_views_in",
    "require_distinct_names",
    "require_schemas",
    "view_selects",
    "views_to_drop",
]

CONTROL_KEY = "compat_views"
U = unified_transactions
Order = dict[LegacySystemType, list[str]]


def require_schemas(engine: sa.Engine) -> None:
    """InputError unless the database has schemas (a view cannot take a table's name in
    the same namespace: SQLite has one)."""
    if not ops_for(engine).supports_schemas:
        raise InputError(
            f"--compat-views needs PostgreSQL: the views stand in for the legacy tables under "
            f"their own names in a schema of their own ({COMPAT_SCHEMA}), and "
            f"{engine.dialect.name} has no schemas. Readers of the legacy status read it "
            "through unistatus (the adapter, the API) once the columns are retired"
        )


def column_order(engine: sa.Engine, settings: Settings) -> Order:
    """Each legacy table's column names in the database's order (taken before the drop,
    so the views keep the status column where readers had it)."""
    tables = resolve_legacy_tables(engine, settings, require_status=False)
    return {system: [c.name for c in lt.table.c] for system, lt in tables.items()}


def view_selects(
    bind: sa.Engine | sa.Connection,
    settings: Settings,
    order: Order | None = None,
    types: dict[LegacySystemType, str] | None = None,
) -> dict[str, sa.Select[Any]]:
    """The SELECT of each view, by legacy table name.

    The legacy row LEFT JOIN its unified row (every legacy row stays, as in the table),
    every column of the table as it is now, and the configured status column as
    ``unified_transactions.legacy_status``: where ``order`` put it (the order before
    the drop), else last (where an undo puts the restored column back); cast to the
    type ``types`` names for its system (the application's enum the column had), so a
    reader compares and sorts it as before. On a connection: the tables as its
    transaction has them (the drop's, not yet committed).
    """
    require_distinct_names(bind, settings)
    tables = resolve_legacy_tables(bind, settings, require_status=False)
    out: dict[str, sa.Select[Any]] = {}
    with connected(bind) as conn:
        for system, found in tables.items():
            lt = pinned_legacy_table(conn, found)  # never resolved through a reader's path
            status = settings.legacy_tables[system.value].status
            names = list((order or {}).get(system) or [c.name for c in lt.table.c])
            names = [n for n in names if n == status or n in lt.table.c]
            names += [c.name for c in lt.table.c if c.name not in names]
            if status not in names:
                names.append(status)
            kind = (types or {}).get(system)
            legacy_status = (
                U.c.legacy_status if kind is None else sa.cast(U.c.legacy_status, Named(kind))
            )
            columns = [
                legacy_status.label(status) if name == status else lt.table.c[name]
                for name in names
            ]
            on = sa.and_(U.c.legacy_system == system.value, U.c.legacy_id == lt.id)
            out[lt.name] = sa.select(*columns).select_from(lt.table.outerjoin(U, on))
    return out


def require_distinct_names(bind: sa.Engine | sa.Connection, settings: Settings) -> None:
    """InputError when two legacy tables share a name (in two schemas): a view stands in
    for its table under the table's own name, so both would be one view, the last one's,
    and a reader of the first would read the other's rows."""
    tables = resolve_legacy_tables(bind, settings, require_status=False)
    by_name: dict[str, list[str]] = {}
    for found in tables.values():
        named = ".".join(part for part in (found.table.schema, found.name) if part)
        by_name.setdefault(found.name, []).append(named)
    for name, tables_named in by_name.items():
        if len(tables_named) > 1:
            raise InputError(
                f"--compat-views names each view after its table: {' and '.join(tables_named)} "
                f"would both be {COMPAT_SCHEMA}.{name}, and readers of one would read the "
                "other's rows; retire without --compat-views (nothing changed)"
            )


def _sql(conn: sa.Connection, select: sa.Select[Any]) -> str:
    """``select`` as SQL text, our tables named in their schema, values inlined."""
    names = translate_map(schema_of(conn))
    translate: dict[str, Any] = (
        {"schema_translate_map": names, "render_schema_translate": True} if names else {}
    )
    compiled = select.compile(
        dialect=conn.dialect, compile_kwargs={"literal_binds": True}, **translate
    )
    return str(compiled)


def compat_views(bind: sa.Engine | sa.Connection) -> list[str]:
    """The views in :data:`COMPAT_SCHEMA` now (empty without schemas or views)."""
    if not ops_for(bind.engine).supports_schemas:
        return []
    with connected(bind) as conn, unbound_connection(conn):
        return sorted(sa.inspect(conn).get_view_names(schema=COMPAT_SCHEMA))


def create_compat_views(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str,
    reason: str,
    order: Order | None = None,
    types: dict[LegacySystemType, str] | None = None,
) -> dict[str, Any]:
    """(Re)create one view per legacy table in :data:`COMPAT_SCHEMA`, in one transaction
    (``order``, ``types``: :func:`view_selects`)."""
    require_schemas(engine)
    with ops_for(engine).write_transaction() as conn:
        return create_compat_views_in(
            conn, settings, actor=actor, reason=reason, order=order, types=types
        )


def create_compat_views_in(
    conn: sa.Connection,
    settings: Settings,
    *,
    actor: str,
    reason: str,
    order: Order | None = None,
    types: dict[LegacySystemType, str] | None = None,
) -> dict[str, Any]:
    """:func:`create_compat_views` in the transaction of ``conn`` (the retirement makes
    them in its drop's: a reader never finds a table without its status column)."""
    selects = view_selects(conn, settings, order, types)
    quote = conn.dialect.identifier_preparer.quote_schema
    conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quote(COMPAT_SCHEMA)}")
    for name, select in selects.items():
        view = qualify(name, COMPAT_SCHEMA, conn.dialect)
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {view}")
        conn.exec_driver_sql(f"CREATE VIEW {view} AS {_sql(conn, select)}")
    write_value(conn, CONTROL_KEY, "on", actor=actor, reason=reason)
    return {"schema": COMPAT_SCHEMA, "views": sorted(selects)}


def drop_compat_views_in(
    conn: sa.Connection, settings: Settings, *, actor: str, reason: str
) -> list[str]:
    """Drop the views :func:`create_compat_views` made, and the schema once it is empty
    (anything else someone put there stays, and so does the schema), in the transaction
    of ``conn`` (an undo drops them with the columns' return: never the one without the
    other); returns the views dropped."""
    present, ours = _views_in(conn, settings)
    if not present:
        return []
    for name in ours:
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {qualify(name, COMPAT_SCHEMA, conn.dialect)}")
    if len(ours) == len(present):
        with unbound_connection(conn):
            left = sa.inspect(conn).get_table_names(schema=COMPAT_SCHEMA)
        if not left:
            quote = conn.dialect.identifier_preparer.quote_schema
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote(COMPAT_SCHEMA)}")
    write_value(conn, CONTROL_KEY, "off", actor=actor, reason=reason)
    return ours


def views_to_drop(conn: sa.Connection, settings: Settings) -> list[str]:
    """The views :func:`drop_compat_views_in` would drop now, as SQL names (for their
    locks to be taken first)."""
    return [qualify(name, COMPAT_SCHEMA, conn.dialect) for name in _views_in(conn, settings)[1]]


def _views_in(conn: sa.Connection, settings: Settings) -> tuple[list[str], list[str]]:
    """(every view in :data:`COMPAT_SCHEMA`, those of them named like a legacy table)."""
    present = compat_views(conn)
    names = {settings.legacy_tables[s.value].table for s in LegacySystemType}
    return present, [name for name in present if name in names]
