"""Where a bare table name goes on PostgreSQL: the connection's ``search_path``.

The default layout (``schema = "public"``) names unistatus's tables bare: they are found,
and a migration creates new ones, through the search_path of the role that connects. A
role whose search_path finds another schema first (``"$user", public`` with a schema
named after the role, the most common) made ``unistatus init`` install a second set of
tables in that schema, and every command of that role used them: an operator's mode
switch or rollback in one installation, the adapters of another role reading the other.
A migration run where the installation is found but not first would put its new tables
in one schema and alter the old ones in another. So, in the default layout:

- a migration (``init``, an upgrade, a downgrade) runs only where its new objects go
  beside the installation: into the schema that holds it, or into ``public`` for a new
  one (:func:`require_one_place`); else a ConfigError saying where, nothing changed;
- a database whose installation the search_path does not reach says where it is
  (:func:`where_it_is`), not "run `unistatus init`";
- a process is refused where the search_path reaches another installation before
  public's (a second one, made with ``init --alongside`` in the role's own schema), or
  finds one of unistatus's tables in another schema than the installation's (a table of
  the role's own named like it): it would read one installation's mode and write to the
  other's tables (:func:`mixed_installations`).

With the ``schema`` setting the names are qualified and the search_path plays no part,
but the same mistake is one setting away: turned on (or set in one process's config
only) over an installation in public, ``init`` made a second, empty one over the same
legacy tables. A migration that would make a new installation while the database holds
another is refused (:func:`require_sole_installation`), in either layout, unless asked
for (``init --alongside``: two applications, each with its own legacy tables).

Legacy tables named without a schema are the application's and are found as it finds
them, through the same search_path (README, "Your own legacy tables"), with one
exception: the compatibility views a retirement leaves (:data:`COMPAT_SCHEMA`, ``retire
legacy-columns --compat-views``) have the legacy tables' names, and their readers put
that schema first. The role unistatus runs as is often the application's own; unistatus
never takes those views for the tables: a name is resolved on the search_path without
that schema (in the default layout a legacy table is then named in the schema found so,
not bare: :func:`unistatus.db.legacy_reflect.legacy_schema`), and a migration runs on it
(:func:`without_compat_views`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import sqlalchemy as sa

from unistatus.config import DEFAULT_SCHEMA
from unistatus.errors import ConfigError

__all__ = [
    "COMPAT_SCHEMA",
    "SearchPath",
    "compat_views_on_path",
    "installed_elsewhere",
    "mixed_installations",
    "require_one_place",
    "require_sole_installation",
    "resolved_oids",
    "resolved_oids_without_compat",
    "search_path",
    "where_it_is",
    "without_compat_views",
]

# The table every installation has: Alembic's version table (db/schema.py).
INSTALLATION_TABLE = "unistatus_alembic_version"

# The schema of the views ``retire legacy-columns --compat-views`` leaves for readers.
COMPAT_SCHEMA = "unistatus_compat"

# The compatibility schema is on the search_path.
_ON_PATH = f"'{COMPAT_SCHEMA}' = ANY(current_schemas(false))"
# The schemas of the search_path that exist, in order, without the compatibility schema.
_SCHEMAS = (
    "(SELECT u.name, u.n FROM unnest(current_schemas(false)) WITH ORDINALITY AS u(name, n) "
    f"WHERE u.name <> '{COMPAT_SCHEMA}') AS p"
)
# Where a bare CREATE goes; the schema a bare table name resolves to (NULL: none has it).
_WHERE = sa.text(
    f"SELECT (SELECT p.name FROM {_SCHEMAS} ORDER BY p.n LIMIT 1), "
    "current_setting('search_path'), "
    "(SELECT p.name FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s "
    f"ON s.oid = c.relnamespace JOIN {_SCHEMAS} ON p.name = s.nspname "
    f"WHERE c.relname = :table ORDER BY p.n LIMIT 1), {_ON_PATH}"
)
# Where each of the bare names :tables resolves to (NULL: none has it).
_RESOLVED = sa.text(
    "SELECT t.name, (SELECT p.name FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s "
    f"ON s.oid = c.relnamespace JOIN {_SCHEMAS} ON p.name = s.nspname "
    "WHERE c.relname = t.name ORDER BY p.n LIMIT 1) "
    "FROM unnest(CAST(:tables AS text[])) AS t(name)"
)


def resolved_oids(names: Sequence[str], dialect: sa.Dialect) -> tuple[str, str]:
    """SQL for an array of the relation each bare table name in ``names`` resolves to
    (its oid; 0: none) as unistatus resolves a name, the compatibility schema left out,
    and the SQL that says whether to read it there: ``to_regclass`` (~1 us a name)
    reads it where that schema is not on the path, ``(where, plain)``; where it is,
    :func:`resolved_oids_without_compat` (each name looked up schema by schema: a
    statement of 23 names took 0.2 ms more to start, so not one CASE of both). The
    names are written in as literals: no array parameter to adapt each time."""
    literal = _literal(dialect)
    quote = dialect.identifier_preparer.quote
    plain = ", ".join(f"coalesce(to_regclass({literal(quote(n))})::oid, 0)" for n in names)
    return _ON_PATH, f"ARRAY[{plain}]::bigint[]"


def resolved_oids_without_compat(names: Sequence[str], dialect: sa.Dialect) -> str:
    """The array :func:`resolved_oids` names, read schema by schema without the
    compatibility schema (for a connection that has it on its path)."""
    literal = _literal(dialect)
    one = (
        "coalesce((SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s "
        f"ON s.oid = c.relnamespace JOIN {_SCHEMAS} ON p.name = s.nspname "
        "WHERE c.relname = {name} ORDER BY p.n LIMIT 1), 0)"
    )
    return "ARRAY[" + ", ".join(one.format(name=literal(n)) for n in names) + "]::bigint[]"


def _literal(dialect: sa.Dialect) -> Callable[[str], str]:
    literal = sa.String().literal_processor(dialect)  # type: ignore[no-untyped-call]
    assert literal is not None  # every dialect's String renders literals
    return cast(Callable[[str], str], literal)


_COMPAT_ON_PATH = sa.text(f"SELECT {_ON_PATH}")
# The search_path without the compatibility schema, for the current transaction.
_WITHOUT_COMPAT = sa.text(
    "SELECT set_config('search_path', array_to_string(ARRAY(SELECT quote_ident(p.name) "
    f"FROM {_SCHEMAS} ORDER BY p.n), ', '), true) WHERE {_ON_PATH}"
)
# Every schema holding an installation, with whether this role may use it.
_HOLDING = sa.text(
    "SELECT schemaname, has_schema_privilege(schemaname, 'USAGE') FROM pg_catalog.pg_tables "
    "WHERE tablename = :table ORDER BY schemaname <> 'public', schemaname"
)


@dataclass(frozen=True)
class SearchPath:
    """What a bare name means on one connection."""

    current: str | None  # where a bare CREATE goes (None: no schema of the path exists)
    path: str  # the search_path as set
    found_in: str | None  # the schema the bare table name asked about resolves to (None: none)
    compat_views: bool = False  # COMPAT_SCHEMA is on the path (left out of the two above)


def search_path(conn: sa.Connection, table: str = INSTALLATION_TABLE) -> SearchPath:
    """The search_path of ``conn``, and where the bare name ``table`` resolves to (by
    default the installation's version table: where the installation it reaches is)."""
    current, path, found_in, compat = conn.execute(_WHERE, {"table": table}).one()
    return SearchPath(current, str(path), found_in, bool(compat))


def compat_views_on_path(conn: sa.Connection) -> bool:
    """Whether :data:`COMPAT_SCHEMA` is on the search_path of ``conn`` (PostgreSQL)."""
    return bool(conn.execute(_COMPAT_ON_PATH).scalar_one())


def without_compat_views(conn: sa.Connection) -> None:
    """Drop the compatibility schema from the search_path of ``conn`` for its current
    transaction (PostgreSQL): a bare legacy table name there means the table, not its
    view (a migration's DDL and refills name them bare)."""
    conn.execute(_WITHOUT_COMPAT)


def require_one_place(conn: sa.Connection, *, alongside: bool = False) -> None:
    """ConfigError, nothing changed, unless a migration on ``conn`` creates its objects
    beside the installation: in the schema that holds the one the search_path reaches,
    else (none reached) in ``public``, if no installation is anywhere else or
    ``alongside`` (a new one asked for beside it)."""
    sp = search_path(conn)
    first = (
        f"the first schema of this connection's search_path ({sp.path}) that exists"
        if sp.current is not None
        else f"no schema: none of this connection's search_path ({sp.path}) exists"
    )
    if sp.found_in is not None:
        if sp.current == sp.found_in:
            return
        raise ConfigError(
            f"unistatus is installed in schema {sp.found_in}, but a migration would create "
            f"its new objects in {sp.current or 'no schema'} ({first}): put "
            f"{sp.found_in} first in the search_path of the role that runs it "
            "(ALTER ROLE ... SET search_path, or options=-c search_path=... in the URL); "
            "nothing was changed"
        )
    elsewhere = None if alongside else where_it_is(conn, sp)
    if elsewhere is not None:
        also = _ALONGSIDE.format(schema="public") if sp.current == DEFAULT_SCHEMA else ""
        raise ConfigError(f"{elsewhere}{also}; nothing was created")
    if sp.current == DEFAULT_SCHEMA:
        return
    if sp.current is None:
        raise ConfigError(
            f"unistatus would create its tables in {first}: put public in the role's "
            "search_path; nothing was created"
        )
    raise ConfigError(
        f"unistatus would create its tables in schema {sp.current}, {first}, but the "
        f'schema setting says public: set schema = "{sp.current}" (UNISTATUS_SCHEMA) to '
        "install them there, or put public first in the role's search_path; nothing was "
        "created"
    )


def require_sole_installation(conn: sa.Connection, schema: str) -> None:
    """ConfigError, nothing changed, if a migration would make a new installation in
    ``schema`` (none there yet) while the database holds one in another schema; an
    installation in ``schema`` migrates as ever."""
    elsewhere = installed_elsewhere(
        conn,
        schema,
        "and a migration would make a second, empty installation there (its own mode, "
        "LEGACY_ONLY, and no history)",
    )
    if elsewhere is not None:
        raise ConfigError(f"{elsewhere}{_ALONGSIDE.format(schema=schema)}; nothing was created")


def installed_elsewhere(conn: sa.Connection, schema: str, then: str = "") -> str | None:
    """Where the database's installation is when ``schema`` holds none (None: it holds
    one, or the database has none): the schema setting to use instead. ``then``: what
    would follow from the setting as it is."""
    holding = [name for name, _ in conn.execute(_HOLDING, {"table": INSTALLATION_TABLE})]
    if not holding or schema in holding:
        return None
    first = holding[0]
    others = f" (and in {', '.join(holding[1:])})" if holding[1:] else ""
    use = (
        f'leave the schema setting at its default, "{DEFAULT_SCHEMA}" (unset UNISTATUS_SCHEMA)'
        if first == DEFAULT_SCHEMA
        else f'set schema = "{first}" (UNISTATUS_SCHEMA)'
    )
    return (
        f"unistatus is already installed in this database, in schema {first}{others}; the "
        f"schema setting says {schema}, where there is none{', ' + then if then else ''}: "
        f"to use the existing one, {use}"
    )


# How to make a second installation on purpose, in the refusals that would stop it.
_ALONGSIDE = (
    "; to make another installation in {schema} on purpose (another application's legacy "
    "tables), run `unistatus init --alongside`"
)


def mixed_installations(conn: sa.Connection, tables: list[str]) -> str | None:
    """What is wrong when the bare names of unistatus's ``tables`` (the installation's
    version table among them) do not all mean the one installation of the default layout
    on ``conn`` (None: they do, or none is reached). Either one of them resolves to
    another schema than the version table, or the installation reached is not public's
    while public holds one too."""
    rows = conn.execute(_RESOLVED, {"tables": [INSTALLATION_TABLE, *tables]})
    resolved: dict[str, str | None] = {name: schema for name, schema in rows}
    found_in = resolved.pop(INSTALLATION_TABLE)
    if found_in is None:
        return None
    path = str(conn.execute(sa.text("SELECT current_setting('search_path')")).scalar_one())
    strays = sorted(f"{t} (schema {s})" for t, s in resolved.items() if s not in (None, found_in))
    if strays:
        return (
            f"this connection's search_path ({path}) finds unistatus's installation in "
            f"schema {found_in} but {', '.join(strays)} elsewhere first: the process would "
            f"read one and write the other; rename or drop the other table, or put "
            f"{found_in} first in the role's search_path"
        )
    if found_in == DEFAULT_SCHEMA:
        return None
    holding = [name for name, _ in conn.execute(_HOLDING, {"table": INSTALLATION_TABLE})]
    if DEFAULT_SCHEMA not in holding:
        return None
    return (
        f"this connection's search_path ({path}) reaches the unistatus installation in "
        f"schema {found_in} first, but the schema setting says {DEFAULT_SCHEMA}, which "
        f"holds another: to use {DEFAULT_SCHEMA}'s, put {DEFAULT_SCHEMA} first in the "
        f"role's search_path (ALTER ROLE ... SET search_path, or options=-c "
        f'search_path=... in the URL); to use the other, set schema = "{found_in}" '
        "(UNISTATUS_SCHEMA)"
    )


def where_it_is(conn: sa.Connection, sp: SearchPath | None = None) -> str | None:
    """Where the installation is when the search_path of ``conn`` does not reach it
    (None: it does, or there is none)."""
    sp = sp or search_path(conn)
    if sp.found_in is not None:
        return None
    holding = list(conn.execute(_HOLDING, {"table": INSTALLATION_TABLE}))
    if not holding:
        return None
    schema, usable = holding[0]
    others = f" (and in {', '.join(s for s, _ in holding[1:])})" if holding[1:] else ""
    if not usable:
        return (
            f"unistatus is installed in schema {schema}{others}, which this role may not use "
            f"(no USAGE privilege on it): GRANT USAGE ON SCHEMA {schema} TO the role"
        )
    return (
        f"unistatus is installed in schema {schema}{others}, which this connection's "
        f"search_path ({sp.path}) does not reach: add {schema} to the role's search_path "
        f'(or set schema = "{schema}" if it was installed with that setting)'
    )
