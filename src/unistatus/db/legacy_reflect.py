"""Where each legacy table is and what the database has under its name: the schema it
is named in (:func:`legacy_schema`), the table reflected (:func:`reflect_legacy_tables`)
and its kind (:func:`legacy_table_kinds`), and how SQL and messages name it.

Split from :mod:`unistatus.db.legacy`, which builds a :class:`~unistatus.db.legacy.LegacyTable`
from what this finds (:func:`~unistatus.db.legacy.resolve_legacy_tables`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from unistatus.config import LegacyTableSpec
from unistatus.db.binding import connected, qualify, schema_of, unbound_connection
from unistatus.db.legacy_kinds import table_kinds
from unistatus.db.search_path import SearchPath, compat_views_on_path, search_path
from unistatus.errors import ConfigError

__all__ = [
    "legacy_schema",
    "legacy_schemas",
    "legacy_table_kinds",
    "legacy_table_name",
    "legacy_table_sql",
    "reflect_legacy_table",
    "reflect_legacy_tables",
    "resolved_schema",
    "searched",
]


# PostgreSQL: the schema a bare table name resolves to (where a bare CREATE would put it
# when none has it yet). The name is passed as a value, never pasted.
def legacy_schema(bind: sa.Engine | sa.Connection, spec: LegacyTableSpec) -> str | None:
    """The schema to name a legacy table in, so that it is never taken for one of ours.

    The configured ``schema`` if any. Else None (the bare name, resolved through the
    search_path as the application resolves it) while our tables are unqualified too.
    When they are in a schema of their own the bare name would be translated into it
    (:mod:`unistatus.db.binding`), so the table is pinned to the schema its bare name
    resolves to now (no such table yet: ``current_schema()``, where a bare ``CREATE
    TABLE`` would put it). So too in the default layout while the compatibility views
    are on the search_path (:data:`unistatus.db.search_path.COMPAT_SCHEMA`: views under
    the legacy tables' names, for readers), so that the table is named, not its view.
    """
    if spec.schema is not None:
        return spec.schema
    if schema_of(bind) is not None:
        return resolved_schema(bind, spec.table)
    if bind.dialect.name != "postgresql":
        return None
    where = _search_path(bind, spec.table)
    return resolved_schema(bind, spec.table, where) if where.compat_views else None


def legacy_schemas(conn: sa.Connection, specs: Sequence[LegacyTableSpec]) -> list[str | None]:
    """:func:`legacy_schema` of each of ``specs``; in the default layout the search_path
    is looked at once for them all (the views are seldom on it)."""
    default_layout = conn.dialect.name == "postgresql" and schema_of(conn) is None
    if default_layout and not compat_views_on_path(conn):
        return [spec.schema for spec in specs]
    return [legacy_schema(conn, spec) for spec in specs]


def resolved_schema(
    bind: sa.Engine | sa.Connection, table: str, where: SearchPath | None = None
) -> str:
    """PostgreSQL: the schema the bare name ``table`` resolves to now (where a bare
    ``CREATE TABLE`` would put it, when none has it yet); ``where``: the search_path
    already read for ``table``."""
    if where is None:
        where = _search_path(bind, table)
    found = where.found_in or where.current
    if found is None:
        raise ConfigError(
            f"legacy table {table!r}: the search_path names no existing schema; set "
            "its schema in legacy_tables"
        )
    return str(found)


def _search_path(bind: sa.Engine | sa.Connection, table: str) -> SearchPath:
    with connected(bind) as conn:
        return search_path(conn, table)


def reflect_legacy_table(
    conn: sa.Connection, spec: LegacyTableSpec, meta: sa.MetaData | None = None
) -> sa.Table | None:
    """The application's table as the database has it now (None: there is none), named
    in :func:`legacy_schema` and reflected untranslated (its foreign keys may point at
    more tables of the application's)."""
    return _reflect_one(conn, spec.table, legacy_schema(conn, spec), meta or sa.MetaData())


def _reflect_one(
    conn: sa.Connection, name: str, schema: str | None, meta: sa.MetaData
) -> sa.Table | None:
    with unbound_connection(conn):
        if not sa.inspect(conn).has_table(name, schema=schema):
            return None
        return sa.Table(name, meta, schema=schema, autoload_with=conn)


def reflect_legacy_tables(
    conn: sa.Connection,
    specs: Sequence[LegacyTableSpec],
    meta: sa.MetaData,
    *,
    columns_only: bool = False,
) -> list[sa.Table | None]:
    """:func:`reflect_legacy_table` of each of ``specs``, in one reflection per schema.

    Reflected one by one, each table costs a round trip per catalog query (columns,
    keys, indexes, constraints, comments) and its foreign keys reflect the tables they
    point at as well: 0.14-0.18 s of every command's start-up on PostgreSQL for three
    tables. ``MetaData.reflect`` asks each catalog query once for all the tables of a
    schema, and ``resolve_fks=False`` leaves the tables they point at alone (nothing
    here follows a legacy table's foreign keys). A name the bulk reflection does not
    find as a table of that exact spelling (none by that name, a view, another case on
    SQLite) is looked up as :func:`reflect_legacy_table` does, so the outcome is the
    same: the table, or None.

    ``columns_only``: the tables' columns and nothing else (no keys, indexes or
    constraints), from one catalog query per schema: enough for a command that only
    reads them (``check``, ``backfill``, each round of continuous verification), and a
    third of the time (PostgreSQL, three tables in a new process: 0.03 s against
    0.08-0.10 s).
    """
    schemas = legacy_schemas(conn, specs)
    wanted: dict[str | None, set[str]] = {}
    for spec, schema in zip(specs, schemas, strict=True):
        wanted.setdefault(schema, set()).add(spec.table)
    with unbound_connection(conn):
        for schema, names in wanted.items():
            if columns_only:
                _reflect_columns(conn, schema, names, meta)
                continue
            meta.reflect(
                conn,
                schema=schema,
                only=lambda name, _meta, names=names: name in names,
                resolve_fks=False,
            )
    out: list[sa.Table | None] = []
    for spec, schema in zip(specs, schemas, strict=True):
        key = spec.table if schema is None else f"{schema}.{spec.table}"
        table = meta.tables.get(key)
        out.append(table if table is not None else _reflect_one(conn, spec.table, schema, meta))
    return out


def _reflect_columns(
    conn: sa.Connection, schema: str | None, names: set[str], meta: sa.MetaData
) -> None:
    """Each of the tables ``names`` of ``schema`` into ``meta``, as its columns only."""
    found = sa.inspect(conn).get_multi_columns(schema=schema, filter_names=sorted(names))
    for (_schema, name), columns in found.items():
        if name not in names:  # a name the catalog matched another way (case, on SQLite)
            continue
        sa.Table(name, meta, *[_column_of(c) for c in columns], schema=schema)


def _column_of(reflected: Any) -> sa.Column[Any]:
    """A reflected column (``Inspector.get_columns``'s dict) as a Column, with what
    :attr:`LegacyTable.extra_columns` reads of it: type, nullability, server default,
    generated value (as ``Table(autoload_with=...)`` builds it)."""
    extra: list[Any] = []
    default = reflected.get("default")
    if default is not None:
        extra.append(sa.DefaultClause(sa.text(default) if isinstance(default, str) else default))
    if reflected.get("computed") is not None:
        extra.append(sa.Computed(**reflected["computed"]))
    if reflected.get("identity") is not None:
        extra.append(sa.Identity(**reflected["identity"]))
    return sa.Column(
        reflected["name"],
        reflected["type"],
        *extra,
        nullable=reflected["nullable"],
        autoincrement=reflected.get("autoincrement", "auto"),
    )


def legacy_table_sql(bind: sa.Engine | sa.Connection, spec: LegacyTableSpec) -> str:
    """A legacy table as a statement of ours names it (``LOCK TABLE``): quoted, in
    :func:`legacy_schema`."""
    return qualify(spec.table, legacy_schema(bind, spec), bind.dialect)


def legacy_table_name(spec: LegacyTableSpec) -> str:
    """How messages name a legacy table: ``table``, or ``schema.table`` if configured."""
    return spec.table if spec.schema is None else f"{spec.schema}.{spec.table}"


def searched(database: sa.Engine | sa.Connection, spec: LegacyTableSpec) -> str:
    """Where a legacy table named without a schema was looked for (PostgreSQL): the
    connection's search_path, which may not reach the schema that holds it."""
    if spec.schema is not None or database.dialect.name != "postgresql":
        return ""
    try:
        with connected(database) as conn:
            path = search_path(conn).path
    except sa.exc.DBAPIError:
        return ""
    return f" in this connection's search_path ({path})"


def legacy_table_kinds(
    database: sa.Engine | sa.Connection, specs: Sequence[LegacyTableSpec]
) -> list[tuple[str, str]]:
    """Of ``specs``, the tables that are not an ordinary table with a rowid: (as messages
    name it, kind) (:mod:`unistatus.db.legacy_kinds`: what is refused where)."""
    with connected(database) as conn:
        where = legacy_schemas(conn, specs)
        names = [qualify(s.table, w, conn.dialect) for s, w in zip(specs, where, strict=True)]
        shown = [legacy_table_name(spec) for spec in specs]
        return table_kinds(conn, list(zip(shown, names, [s.table for s in specs], strict=True)))
