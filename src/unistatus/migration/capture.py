"""Writes that bypass the adapter, captured in the database: ``unistatus capture``.

:func:`enable` installs triggers on the configured legacy tables (generated from the
mapping: :mod:`unistatus.migration.capture_sql`, :mod:`unistatus.migration.capture_ddl`)
that keep unified in step with any writer, and count who wrote; :func:`disable` removes
every one; :func:`status` lists them and the writers seen
(:mod:`unistatus.migration.capture_writers`). The decisions and their reasons:
docs/capture.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc
from unistatus.config import Settings
from unistatus.db.binding import schema_of
from unistatus.db.control import write_value
from unistatus.db.ddl_wait import attempt_ms, run_politely
from unistatus.db.dialect import ops_for
from unistatus.db.id_reuse import ids_reused
from unistatus.db.legacy import LegacyTable, pinned_legacy_table, resolve_legacy_tables
from unistatus.db.legacy_kinds import refuse_kinds
from unistatus.db.legacy_reflect import legacy_table_kinds, legacy_table_sql
from unistatus.db.legacy_tree import tables_under
from unistatus.db.mode_reads import read_value
from unistatus.db.revisions import require_current_schema
from unistatus.db.search_path import search_path
from unistatus.db.tables import control_log, unified_transactions
from unistatus.db.tables_capture import capture_changed
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.domain.mapping import extra_statuses
from unistatus.errors import ConfigError, StorageError
from unistatus.migration.capture_ddl import CaptureDdl
from unistatus.migration.capture_frozen import SHORT as STATUS_TRIGGER
from unistatus.migration.capture_locks import capture_changes
from unistatus.migration.capture_names import (
    PREFIX,
    Trigger,
    Under,
    definitions,
    function_names,
)
from unistatus.migration.capture_writers import (
    FOLD_AFTER,
    WriterSeen,
    fold_writers,
    foreign_unified_writes,
    writers_seen,
)

__all__ = [
    "CONTROL_KEY",
    "CaptureStatus",
    "WriterSeen",
    "disable",
    "enable",
    "enabled_since",
    "FOLD_AFTER",
    "fold_writers",
    "foreign_unified_writes",
    "installed",
    "is_enabled",
    "release_status_columns_in",
    "restore_in",
    "retire_in",
    "status",
    "writers_seen",
]

# The operator's intent, in the control table (and its log): "enabled" or "disabled".
CONTROL_KEY = "capture"
ENABLED, DISABLED = "enabled", "disabled"
# The extra legacy values the installed triggers were generated from (JSON): the triggers
# hold the mapping as it was then, so a value configured since is theirs only after
# `enable` runs again.
MAPPING_KEY = "capture_mapping"
# Bounds of the transaction that installs or drops the triggers (PostgreSQL): creating a
# trigger waits for the table's writes in flight, and holds new ones until it commits.
DDL_STATEMENT_MS = 60_000


@dataclass
class CaptureStatus:
    """What is installed, against what the intent (``enabled``) asks for."""

    enabled: bool
    installed: list[Trigger]
    expected: list[Trigger]
    functions: list[str]
    suspended: list[str] = field(default_factory=list)  # tables whose status is retired
    writers: list[WriterSeen] = field(default_factory=list)
    changed_while_legacy_only: int = 0
    # Enabled, and the configured mapping is not the one the triggers were generated from.
    mapping_changed: bool = False
    # Enabled, and an installed definition is not what this code generates now (an
    # earlier unistatus generated it, or another configuration): `enable` again.
    sql_changed: bool = False
    # Legacy tables that may hand a deleted row's id out again (db.id_reuse).
    ids_reused: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The catalog holds exactly what the intent asks for, from the current mapping."""
        want = self.expected if self.enabled else []
        return (
            sorted(self.installed, key=_key) == sorted(want, key=_key)
            and (self.enabled or not self.functions)
            and not self.mapping_changed
            and not self.sql_changed
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "ok": self.ok,
            "triggers": [{"name": t.name, "table": t.table} for t in self.installed],
            "missing": [
                {"name": t.name, "table": t.table}
                for t in self.expected
                if self.enabled and t not in self.installed
            ],
            "functions": list(self.functions),
            "suspended": list(self.suspended),
            "changed_while_legacy_only": self.changed_while_legacy_only,
            "ids_reused": list(self.ids_reused),
            "mapping_changed": self.mapping_changed,
            "sql_changed": self.sql_changed,
            "writers": [w.as_dict() for w in self.writers],
        }


def _key(t: Trigger) -> tuple[str, str]:
    return (t.name, t.table)


# --- the catalog --------------------------------------------------------------------------


# PostgreSQL: this installation's capture functions (by name, in its schema) and the
# triggers that call them; another installation's (in another schema) are not ours.
_PG_OURS = "p.pronamespace = CAST(:schema AS regnamespace) AND p.proname IN :names"
_PG_FUNCTIONS = sa.text(
    f"SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p WHERE {_PG_OURS} ORDER BY 1"
).bindparams(sa.bindparam("names", expanding=True))
_PG_TRIGGERS = sa.text(
    "SELECT t.tgname, c.relname, t.tgrelid::regclass::text FROM pg_catalog.pg_trigger t "
    "JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid "
    "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
    f"WHERE NOT t.tgisinternal AND {_PG_OURS} ORDER BY 1, 2"
).bindparams(sa.bindparam("names", expanding=True))


DUPLICATE_OBJECT = "42710"
# The schemas of other installations whose capture triggers are on a table (PostgreSQL).
_PG_OTHERS = sa.text(
    "SELECT DISTINCT n.nspname FROM pg_catalog.pg_trigger t "
    "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
    "WHERE NOT t.tgisinternal AND p.proname IN :names "
    "AND p.pronamespace <> CAST(:schema AS regnamespace) ORDER BY 1"
).bindparams(sa.bindparam("names", expanding=True))


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)


def _other_installations(engine: sa.Engine) -> list[str]:
    """The schemas of the other installations whose capture triggers are on tables here."""
    try:
        with engine.connect() as conn:
            where = {"schema": own_schema(conn), "names": function_names()}
            return list(conn.execute(_PG_OTHERS, where).scalars())
    except sa.exc.DBAPIError:
        return []


def installed(conn: sa.Connection) -> tuple[list[Trigger], list[str]]:
    """This installation's capture triggers and (PostgreSQL) functions, in the catalog now."""
    if conn.dialect.name == "postgresql":
        where = {"schema": own_schema(conn), "names": function_names()}
        triggers = conn.execute(_PG_TRIGGERS, where).all()
        functions = conn.execute(_PG_FUNCTIONS, where).scalars()
        return [Trigger(name, table, on) for name, table, on in triggers], list(functions)
    like = PREFIX.replace("_", "\\_") + "%"
    rows = conn.execute(
        sa.text(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' "
            "AND name LIKE :like ESCAPE '\\' ORDER BY 1"
        ),
        {"like": like},
    ).all()
    return [Trigger(name, table) for name, table in rows], []


_PG_DEFINITIONS = sa.text(
    f"SELECT p.proname, p.prosrc FROM pg_catalog.pg_proc p WHERE {_PG_OURS}"
).bindparams(sa.bindparam("names", expanding=True))


# What :func:`_sql_changed` found, by what it depends on: the generated SQL is this
# process's code applied to its configuration, so the same catalog, tables and mapping
# get the same answer, and generating it (a quarter of a second) is not repeated on
# every gate evaluation (``/metrics``, the dashboards, ``monitor``).
_compared: dict[str, bool] = {}
_COMPARED_KEPT = 64


def _sql_changed(
    conn: sa.Connection, ddl: CaptureDdl, tables: list[LegacyTable], generated: list[str] | None
) -> bool:
    """Whether an installed definition differs from what :func:`enable` would install
    now (``generated``: those statements, if at hand; one missing is
    :attr:`CaptureStatus.installed`'s business)."""
    if conn.dialect.name == "postgresql":
        where = {"schema": own_schema(conn), "names": function_names()}
        rows = conn.execute(_PG_DEFINITIONS, where)
    else:
        rows = conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))
    catalog = {str(name): str(text) for name, text in rows}
    inputs = [
        conn.engine.url.render_as_string(hide_password=True),
        ddl.ops.schema,
        ddl.ops.mode_lock_key,
        _mapping_now(),
        # The columns' types too: the triggers cast an enum status (LegacyTable.as_text).
        sorted((lt.table.fullname, [(c.name, str(c.type)) for c in lt.table.c]) for lt in tables),
        sorted(catalog.items()),
    ]
    key = hashlib.sha256(json.dumps(inputs, default=str).encode()).hexdigest()
    if generated is None:
        if key in _compared:
            return _compared[key]
        generated = _install(ddl, conn, tables, ddl.ops.mode_lock_key)
    wanted = definitions(generated, postgres=conn.dialect.name == "postgresql")
    changed = any(name in catalog and catalog[name] != text for name, text in wanted.items())
    if len(_compared) >= _COMPARED_KEPT:
        _compared.clear()
    _compared[key] = changed
    return changed


def _capturable(
    database: sa.Engine | sa.Connection, settings: Settings
) -> tuple[list[LegacyTable], list[str]]:
    """The legacy tables triggers go on (those with a status column), and the rest."""
    tables = resolve_legacy_tables(database, settings, require_status=False)
    present = [lt for lt in tables.values() if lt.status is not None]
    retired = [lt.name for lt in tables.values() if lt.status is None]
    return present, retired


def _require_schema(engine: sa.Engine) -> None:
    require_current_schema(engine, "capture")


# --- enable, disable ------------------------------------------------------------------------


def enable(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str = "cli",
    reason: str = "capture writes that bypass the adapter",
) -> CaptureStatus:
    """Install (or re-install) every capture trigger; records the intent ``enabled``.

    Idempotent: what was installed before is dropped and generated again in the same
    transaction (a mapping or a table changed since is picked up). Tables whose status
    column is retired get none until ``retire --undo`` (:func:`restore_in`).
    """
    _require_schema(engine)
    actor, reason = check_actor(actor), check_reason(reason)
    with engine.connect() as conn:  # a view's triggers cannot have transition tables
        refuse_kinds(legacy_table_kinds(conn, list(settings.legacy_tables.values())), "capture")
    installed_now = _replace(engine, settings, install=True, intent=(ENABLED, actor, reason))
    return _status(engine, settings, installed_now)


def disable(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str = "cli",
    reason: str = "stop capturing writes that bypass the adapter",
) -> CaptureStatus:
    """Drop every trigger and function of the capture (whatever the catalog holds under
    its prefix); records the intent ``disabled``. Counts and logs are kept."""
    _require_schema(engine)
    actor, reason = check_actor(actor), check_reason(reason)
    _replace(engine, settings, install=False, intent=(DISABLED, actor, reason))
    return status(engine, settings)


def _replace(
    engine: sa.Engine,
    settings: Settings,
    *,
    install: bool,
    intent: tuple[str, str, str] | None = None,
) -> list[str]:
    """In one transaction: drop what is installed, then (``install``) install for the
    legacy tables that have a status column, as the transaction sees them once the drops
    hold them (a retirement or its undo that committed meanwhile is seen), and record
    ``intent`` (value, actor, reason) if given. Returns the statements that installed."""
    ops = ops_for(engine)
    ddl = CaptureDdl(ops, engine.dialect)

    def generate(conn: sa.Connection) -> list[str]:
        tables, _ = _capturable(conn, settings)
        return _install(ddl, conn, tables, ops.mode_lock_key)

    def attempt(lock_ms: int) -> list[str]:
        statements: list[str] = []
        with ops.write_transaction() as conn:
            ops.bound_statements(conn, DDL_STATEMENT_MS, lock_ms)
            triggers, functions = installed(conn)
            drops = ddl.drop(triggers, functions)
            if install:
                # Generated before any lock (the drops lock the tables too): the locks
                # block every legacy write, and the generation takes half a second.
                names = _legacy_names(conn, settings)
                schema = own_schema(conn) if names else ""
                seen = _shapes(conn, names, schema)
                statements = generate(conn)
            for statement in drops:
                conn.exec_driver_sql(statement)
            if install:
                _hold_legacy_tables(conn, names)
                now = _shapes(conn, names, schema)
                if [r[:-1] for r in now] != [r[:-1] for r in seen] or any(r[-1] for r in now):
                    # A retirement (or its undo, a partition), or another enable, committed
                    # meanwhile: the locks wait for it; what that enable installed is
                    # dropped, and the DDL generated again as the tables are now.
                    for statement in ddl.drop(installed(conn)[0], []):
                        conn.exec_driver_sql(statement)
                    statements = generate(conn)
                for statement in statements:
                    conn.exec_driver_sql(statement)
                _record_mapping(conn, intent[1] if intent is not None else "unistatus")
            if intent is not None:
                value, actor, reason = intent
                if read_value(conn, CONTROL_KEY) != value or install:
                    write_value(conn, CONTROL_KEY, value, actor=actor, reason=reason)
        return statements

    try:
        # Never queued behind a long transaction on a table it changes (ddl_wait).
        return run_politely(
            engine,
            attempt,
            lambda conn: capture_changes(conn, settings, installed(conn)[0], install=install),
            lock_ms=attempt_ms(settings),
            what="change the capture triggers",
            command=f"unistatus capture {'enable' if install else 'disable'}",
            wait_seconds=settings.mode_lock_wait_seconds,
        )
    except sa.exc.DBAPIError as exc:
        owners = _other_installations(engine) if _sqlstate(exc) == DUPLICATE_OBJECT else []
        if owners:
            raise ConfigError(
                f"the legacy tables are captured by the unistatus installation in schema "
                f"{', '.join(owners)}: one installation captures a table; run `unistatus "
                f'capture disable` there first (with schema = "{owners[0]}"); nothing was '
                "changed"
            ) from None
        raise StorageError(f"cannot change the capture triggers: {exc.orig}") from None


def _legacy_names(conn: sa.Connection, settings: Settings) -> list[str]:
    """PostgreSQL: the legacy tables that exist, as SQL names (SQLite: none; its write
    transaction holds them all). One that does not is left to the reading, which says so."""
    if conn.dialect.name != "postgresql":
        return []
    names = [legacy_table_sql(conn, spec) for spec in settings.legacy_tables.values()]
    exist = sa.select(sa.func.to_regclass(sa.bindparam("name")))
    return [n for n in names if conn.execute(exist, {"name": n}).scalar_one() is not None]


def _hold_legacy_tables(conn: sa.Connection, names: list[str]) -> None:
    """Each legacy table locked as CREATE TRIGGER locks it: a retirement (or its undo)
    committing meanwhile is waited for, and :func:`_shapes` then sees it."""
    for name in names:
        conn.exec_driver_sql(f"LOCK TABLE {name} IN SHARE ROW EXCLUSIVE MODE")


# Marks the one statement between the legacy tables' locks and the DDL (tests find it).
SHAPES_CHECK = "/* unistatus capture: the legacy tables as generated for */"
_SHAPES = sa.text(
    f"{SHAPES_CHECK} SELECT n.name, "
    "(SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' "
    "|| a.attnotnull::text, ', ' ORDER BY a.attnum) FROM pg_catalog.pg_attribute a "
    "WHERE a.attrelid = to_regclass(n.name) AND a.attnum > 0 AND NOT a.attisdropped), "
    "(SELECT string_agg(i.inhrelid::regclass::text, ', ' ORDER BY i.inhrelid) "
    "FROM pg_catalog.pg_inherits i WHERE i.inhparent = to_regclass(n.name)), "
    "(SELECT string_agg(t.tgname, ', ' ORDER BY t.tgname) FROM pg_catalog.pg_trigger t "
    "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid WHERE t.tgrelid = to_regclass(n.name) "
    "AND NOT t.tgisinternal AND p.pronamespace = CAST(:schema AS regnamespace) "
    "AND p.proname IN :functions) "
    "FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS n(name, k) ORDER BY n.k"
).bindparams(sa.bindparam("functions", expanding=True))


def _shapes(conn: sa.Connection, names: list[str], schema: str) -> list[tuple[Any, ...]]:
    """What the capture's DDL is generated from, in one round trip (PostgreSQL): each
    legacy table's columns, the tables under it and (last) our triggers on it. Read again
    under the locks, once the drops ran: the same tables, and none of our triggers (one
    there now was committed by another enable meanwhile), and the DDL generated before
    them stands."""
    if not names:
        return []
    where = {"names": names, "schema": schema, "functions": function_names()}
    return [tuple(row) for row in conn.execute(_SHAPES, where)]


def _record_mapping(conn: sa.Connection, actor: str) -> None:
    """The extra legacy values the triggers just installed map, if not recorded yet
    (``capture status`` compares them with the configuration's)."""
    if read_value(conn, MAPPING_KEY) != _mapping_now():
        reason = "the extra legacy values the capture triggers map"
        write_value(conn, MAPPING_KEY, _mapping_now(), actor=actor, reason=reason)


def _install(
    ddl: CaptureDdl,
    conn: sa.Connection,
    tables: list[LegacyTable],
    mode_lock_key: int,
    *,
    unified: bool = True,
) -> list[str]:
    if conn.dialect.name != "postgresql":
        return ddl.install(tables, unified=unified)
    pinned = [pinned_legacy_table(conn, lt) for lt in tables]
    under = _under(conn, pinned)
    return ddl.install(pinned, own_schema(conn), mode_lock_key, unified=unified, under=under)


def _under(conn: sa.Connection, tables: list[LegacyTable]) -> Under:
    """The tables under each legacy table now (PostgreSQL: its partitions, its inheriting
    tables), which get its triggers: a statement that names one fires theirs, not the
    table's. One created since ``enable`` has none until it runs again (``capture
    status`` names them missing)."""
    format_table = conn.dialect.identifier_preparer.format_table
    pinned = [pinned_legacy_table(conn, lt) for lt in tables]
    return {lt.system: tables_under(conn, format_table(lt.table)) for lt in pinned}


def own_schema(conn: sa.Connection) -> str:
    """Where our tables are (PostgreSQL): the ``schema`` setting's, or (the default
    layout, tables named bare) the schema the search_path finds them in (never the
    compatibility views' schema: :mod:`unistatus.db.search_path`)."""
    schema = schema_of(conn)
    if schema is not None:
        return schema
    where = search_path(conn)
    return str(where.found_in or where.current)


def _mapping_now() -> str:
    """The extra legacy values of this process, as the triggers would be generated now."""
    extras = {s.value: dict(sorted(v.items())) for s, v in extra_statuses().items() if v}
    return json.dumps(extras, sort_keys=True)


def is_enabled(conn: sa.Connection) -> bool:
    """The operator's intent (what ``enable`` / ``disable`` last recorded)."""
    return read_value(conn, CONTROL_KEY) == ENABLED


def enabled_since(conn: sa.Connection) -> datetime | None:
    """Since when capture has been enabled without a break (None: it is not enabled):
    the first ``enabled`` after the last ``disabled`` in the control log. What a window
    of "no bypass write" can prove starts there."""
    if not is_enabled(conn):
        return None
    L = control_log
    mine = L.c.key == CONTROL_KEY
    last_off = sa.select(sa.func.max(L.c.id)).where(mine, L.c.new_value == DISABLED)
    first_on = sa.select(sa.func.min(L.c.created_at)).where(
        mine,
        L.c.new_value == ENABLED,
        L.c.id > sa.func.coalesce(last_off.scalar_subquery(), 0),
    )
    return as_utc(conn.execute(first_on).scalar_one_or_none())


def retire_in(conn: sa.Connection) -> bool:
    """In the retirement's transaction, once its revision dropped the legacy status
    columns (SQLite: just before, nothing writes meanwhile): the capture's objects that
    read them go (each legacy table's triggers and the catch-up, with their functions);
    the detector of direct writes to unified stays. True if capture is enabled.

    Not before, nor in a transaction of its own: until the columns go every bypass write
    is mirrored into unified (one committed after the drop's gates read the table would
    otherwise go with the column), and if the drop is refused or fails they stay."""
    if not is_enabled(conn):
        return False
    ddl = CaptureDdl(ops_for(conn.engine), conn.dialect)
    for statement in ddl.drop(*_legacy_side(*installed(conn))):
        conn.exec_driver_sql(statement)
    return True


def release_status_columns_in(conn: sa.Connection) -> None:
    """In the retirement's transaction, before its revision drops the legacy status
    columns (PostgreSQL: the drop refuses a column a trigger names): the triggers that
    name them (``UPDATE OF``, :mod:`unistatus.migration.capture_frozen`). The rest stay
    until :func:`retire_in`; if the drop is refused or fails, these are back with it."""
    ddl = CaptureDdl(ops_for(conn.engine), conn.dialect)
    triggers, _ = _legacy_side(*installed(conn))
    naming = [t for t in triggers if t.name.endswith(f"_{STATUS_TRIGGER}")]
    for statement in ddl.drop(naming, []):
        conn.exec_driver_sql(statement)


def restore_in(conn: sa.Connection, settings: Settings) -> bool:
    """In the undo's transaction, once its revision restored the status columns: the
    legacy tables' triggers and the catch-up again (as :func:`retire_in` left it, the
    detector of direct writes to unified in place), so that no bypass write comes
    between the columns' return and the capture's. True if capture is enabled."""
    if not is_enabled(conn):
        return False
    ops = ops_for(conn.engine)
    ddl = CaptureDdl(ops, conn.dialect)
    present, _ = _capturable(conn, settings)
    statements = ddl.drop(*_legacy_side(*installed(conn)))
    statements += _install(ddl, conn, present, ops.mode_lock_key, unified=False)
    try:
        for statement in statements:
            conn.exec_driver_sql(statement)
    except sa.exc.DBAPIError as exc:
        raise StorageError(
            f"cannot install the capture triggers again ({exc.orig}): the undo was rolled "
            "back, the status columns are still retired"
        ) from None
    _record_mapping(conn, "unistatus")
    return True


def _legacy_side(installed: list[Trigger], functions: list[str]) -> tuple[list[Trigger], list[str]]:
    """Of what is installed, what reads the legacy tables' columns: each legacy table's
    triggers and the catch-up (on the control table), with their functions; not the
    detector of direct writes to unified."""
    detector = f"{PREFIX}unified"
    triggers = [t for t in installed if t.table != unified_transactions.name]
    # A function's signature as the catalog gives it: [schema.]name().
    kept = [f for f in functions if f.split("(")[0].split(".")[-1].strip('"') != detector]
    return triggers, kept


# --- status, writers --------------------------------------------------------------------------


def status(engine: sa.Engine, settings: Settings) -> CaptureStatus:
    """The installed triggers against the intent, the writers seen, the pending catch-up."""
    return _status(engine, settings, None)


def _status(engine: sa.Engine, settings: Settings, generated: list[str] | None) -> CaptureStatus:
    _require_schema(engine)
    tables, retired = _capturable(engine, settings)
    ddl = CaptureDdl(ops_for(engine), engine.dialect)
    with engine.connect() as conn:
        enabled = is_enabled(conn)
        triggers, functions = installed(conn)
        generated_from = read_value(conn, MAPPING_KEY)
        sql_changed = enabled and bool(triggers) and _sql_changed(conn, ddl, tables, generated)
        changed = conn.execute(sa.select(sa.func.count()).select_from(capture_changed))
        pending = int(changed.scalar_one())
        writers = writers_seen(conn)
        under = _under(conn, tables)
        reused = ids_reused(conn, tables)
    return CaptureStatus(
        enabled=enabled,
        installed=triggers,
        expected=ddl.triggers(tables, under),
        functions=functions,
        suspended=retired if enabled else [],
        writers=writers,
        changed_while_legacy_only=pending,
        # None: enabled before the mapping was recorded (nothing to compare with).
        mapping_changed=enabled and generated_from not in (None, _mapping_now()),
        sql_changed=sql_changed,
        ids_reused=reused,
    )
