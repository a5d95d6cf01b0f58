"""Which schema unistatus's own tables live in, carried by the engine.

Every table of :mod:`unistatus.db.catalog` is declared without a schema. With the
default setting (``schema = "public"``) nothing changes: their names stay unqualified,
exactly as every installation made before the setting existed has them, and an engine
needs nothing. With another schema (PostgreSQL only), the engine is bound to it with
SQLAlchemy's ``schema_translate_map`` execution option, ``{None: schema}``: every statement
built on those tables, DDL included, names them in that schema, and everything that runs
on the engine (the adapter, backfill, check, phases, the service) follows without a
schema in sight. The legacy tables are the application's and must never be translated:
:func:`unistatus.db.legacy.resolve_legacy_tables` gives them an explicit schema whenever
an engine is bound, so the map (which only rewrites ``None``) leaves them alone.

What the map cannot reach is written with :func:`schema_of`: SQL text (revision 0007's
function, :func:`unistatus.db.catalog.qualified_name`), statements compiled ahead of time
(:class:`unistatus.db.prepared.Prepared`), the inspector, Alembic's version table, and a
connection the caller lends the adapter (:func:`bound_connection`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from unistatus.config import DEFAULT_SCHEMA
from unistatus.errors import ConfigError

__all__ = [
    "bind_schema",
    "bound_connection",
    "connected",
    "own_schema",
    "qualify",
    "require_bound",
    "schema_of",
    "translate_map",
    "unbound_connection",
]

_OPTION = "schema_translate_map"
# (id(engine), schema) -> that engine bound to it, while the bound engine lives (it holds
# the engine, so the id is not reused meanwhile): binding one engine twice gives the same
# engine, so what is kept per engine (the adapters' shared statistics) stays shared.
_BOUND: weakref.WeakValueDictionary[tuple[int, str], sa.Engine] = weakref.WeakValueDictionary()


def own_schema(setting: str) -> str | None:
    """The schema to name in SQL for the ``schema`` setting; None for the default
    (the tables' names stay unqualified, as they always were)."""
    return None if setting == DEFAULT_SCHEMA else setting


def translate_map(schema: str | None) -> dict[str | None, str | None] | None:
    """The ``schema_translate_map`` that puts our tables in ``schema`` (None: none)."""
    return None if schema is None else {None: schema}


def schema_of(bind: sa.Engine | sa.Connection) -> str | None:
    """The schema an engine or connection puts our tables in; None: unqualified."""
    found = bind.get_execution_options().get(_OPTION) or {}
    schema = found.get(None)
    return str(schema) if schema else None


def bind_schema(engine: sa.Engine, setting: str) -> sa.Engine:
    """``engine``, bound to the schema the ``schema`` setting names.

    The same engine when it already is (or for the default); a ConfigError when it is
    bound to another schema, or when a schema is asked of SQLite (which has none: one
    database is one file, so a separate installation is a separate file).
    """
    wanted = own_schema(setting)
    if engine.dialect.name != "postgresql" and wanted is not None:
        raise ConfigError(
            f"schema = {setting!r} needs PostgreSQL; {engine.dialect.name} has no schemas "
            f"(leave the setting at {DEFAULT_SCHEMA!r}, or use another database file)"
        )
    current = schema_of(engine)
    if current == wanted:
        return engine
    if current is not None or wanted is None:
        raise ConfigError(
            f"this engine keeps unistatus's tables in schema {current!r} (its "
            f"schema_translate_map: unistatus's create_engine for that schema, or an "
            f"application's own map), but the settings say schema = {setting!r}: hand "
            "unistatus the engine without the map, "
            "engine.execution_options(schema_translate_map=None)"
        )
    bound = _BOUND.get((id(engine), wanted))
    if bound is None:
        bound = engine.execution_options(**{_OPTION: translate_map(wanted)})
        _BOUND[(id(engine), wanted)] = bound
    return bound


def require_bound(bind: sa.Engine | sa.Connection, setting: str) -> None:
    """ConfigError unless ``bind`` puts our tables where the ``schema`` setting says.

    An engine made without the setting would read and write another installation's
    tables (or none): every entry point that is given an engine and the settings checks
    this first (through :func:`unistatus.db.legacy.resolve_legacy_tables`).
    """
    current, wanted = schema_of(bind), own_schema(setting)
    if current != wanted:
        raise ConfigError(
            f"the settings say schema = {setting!r} but the engine names unistatus's tables "
            f"{'in schema ' + repr(current) if current else 'unqualified (public)'}: make it "
            "with unistatus.db.engine.create_engine(url, schema=settings.schema)"
        )


@contextmanager
def connected(bind: sa.Engine | sa.Connection) -> Iterator[sa.Connection]:
    """``bind`` itself (its transaction as it stands), or a connection of the engine for
    the block."""
    if isinstance(bind, sa.Connection):
        yield bind
        return
    with bind.connect() as conn:
        yield conn


@contextmanager
def bound_connection(conn: sa.Connection, schema: str | None) -> Iterator[sa.Connection]:
    """The caller's connection, naming our tables in ``schema`` while the block runs.

    ``Connection.execution_options`` changes the connection in place, so the caller's
    own translate map (none, usually) is put back afterwards: its statements must never
    see ours. In the default layout our tables are named bare: the caller's map (one
    that sends the application's own models to a schema of theirs) is set aside for the
    block; without one there is nothing to do.
    """
    before = conn.get_execution_options().get(_OPTION) or {}
    if schema is None:
        if not before:
            yield conn
            return
        with _translating(conn, {}):
            yield conn
        return
    with _translating(conn, {**before, **(translate_map(schema) or {})}):
        yield conn


@contextmanager
def unbound_connection(conn: sa.Connection) -> Iterator[sa.Connection]:
    """``conn`` with no schema translation while the block runs: for names that are not
    ours (reflecting the application's tables, which may reference more of its own)."""
    if schema_of(conn) is None:
        yield conn
        return
    with _translating(conn, {}):
        yield conn


@contextmanager
def _translating(conn: sa.Connection, names: dict[str | None, str | None]) -> Iterator[None]:
    before = conn.get_execution_options().get(_OPTION)
    conn.execution_options(**{_OPTION: names})
    try:
        yield
    finally:
        # {} rather than None: an empty map is "no translation" everywhere in SQLAlchemy.
        conn.execution_options(**{_OPTION: before or {}})


def qualify(name: str, schema: str | None, dialect: sa.Dialect) -> str:
    """``name`` in ``schema`` (None: unqualified), quoted by ``dialect``'s rules."""
    preparer = dialect.identifier_preparer
    if schema is None:
        return preparer.quote(name)
    return f"{preparer.quote_schema(schema)}.{preparer.quote(name)}"


# (engine, table, column) found present: only a yes is kept, so a column a later
# revision adds is used from the first statement after `unistatus init`.
_COLUMNS_SEEN: weakref.WeakKeyDictionary[sa.Engine, set[tuple[str, str]]] = (
    weakref.WeakKeyDictionary()
)


def has_column(bind: sa.Engine | sa.Connection, table: sa.Table, column: str) -> bool:
    """Whether ``table`` has ``column`` in this database (read on ``bind``: a connection
    in a transaction whose bounds the read then keeps, or one of the engine's).

    New code on an older schema (a rolling upgrade, before ``unistatus init``) asks
    this before using a column a later revision added, instead of failing. A missing
    table answers yes: the statement then fails with the real error.
    """
    engine = bind if isinstance(bind, sa.Engine) else bind.engine
    seen = _COLUMNS_SEEN.setdefault(engine, set())
    if (table.name, column) in seen:
        return True
    try:
        names = {c["name"] for c in sa.inspect(bind).get_columns(table.name, schema_of(bind))}
    except sa.exc.NoSuchTableError:
        return True
    if column in names:
        seen.add((table.name, column))
        return True
    return False
