"""Writes that bypass the adapter, captured in the database: ``unistatus capture``.

:func:`enable` installs triggers on the configured legacy tables (generated from the
mapping: :mod:`unistatus.migration.capture_sql`, :mod:`unistatus.migration.capture_ddl`,
for the tables as they are now: :mod:`unistatus.migration.capture_tables`) that keep
unified in step with any writer, and count who wrote; :func:`disable` removes every one;
both record the operator's intent (:mod:`unistatus.migration.capture_intent`).
:func:`status` lists them and the writers seen (:mod:`unistatus.migration.capture_status`,
:mod:`unistatus.migration.capture_writers`); what the catalog holds:
:mod:`unistatus.migration.capture_catalog`; the capture's part in a retirement of the
status columns: :mod:`unistatus.migration.capture_retire`. The names callers use are
importable from here. The decisions and their reasons: docs/capture.md.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.control import write_value
from unistatus.db.ddl_wait import attempt_ms, run_politely
from unistatus.db.dialect import ops_for
from unistatus.db.legacy_kinds import refuse_kinds
from unistatus.db.legacy_reflect import legacy_table_kinds, legacy_table_sql
from unistatus.db.mode_reads import read_value
from unistatus.db.revisions import require_current_schema
from unistatus.domain.inputs import check_actor, check_reason
from unistatus.errors import ConfigError, StorageError
from unistatus.migration.capture_catalog import installed, other_installations, own_schema
from unistatus.migration.capture_ddl import CaptureDdl
from unistatus.migration.capture_intent import (
    CONTROL_KEY,
    DISABLED,
    ENABLED,
    enabled_since,
    is_enabled,
    record_mapping,
)
from unistatus.migration.capture_locks import capture_changes
from unistatus.migration.capture_names import function_names
from unistatus.migration.capture_retire import release_status_columns_in, restore_in, retire_in
from unistatus.migration.capture_status import CaptureStatus, status, status_generated
from unistatus.migration.capture_tables import (
    capturable,
    install_statements,
    refuse_status_columns_gone,
    status_columns_gone,
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
    "SHAPES_CHECK",
    "WriterSeen",
    "disable",
    "enable",
    "enabled_since",
    "FOLD_AFTER",
    "fold_writers",
    "foreign_unified_writes",
    "installed",
    "is_enabled",
    "own_schema",
    "release_status_columns_in",
    "restore_in",
    "retire_in",
    "status",
    "writers_seen",
]

# Bounds of the transaction that installs or drops the triggers (PostgreSQL): creating a
# trigger waits for the table's writes in flight, and holds new ones until it commits.
DDL_STATEMENT_MS = 60_000
# The SQLSTATE of a CREATE whose object exists (another installation's, say).
DUPLICATE_OBJECT = "42710"


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)


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
    require_current_schema(engine, "capture")
    actor, reason = check_actor(actor), check_reason(reason)
    with engine.connect() as conn:  # a view's triggers cannot have transition tables
        refuse_kinds(legacy_table_kinds(conn, list(settings.legacy_tables.values())), "capture")
    installed_now = _replace(engine, settings, install=True, intent=(ENABLED, actor, reason))
    return status_generated(engine, settings, installed_now)


def disable(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str = "cli",
    reason: str = "stop capturing writes that bypass the adapter",
) -> CaptureStatus:
    """Drop every trigger and function of the capture (whatever the catalog holds under
    its prefix); records the intent ``disabled``. Counts and logs are kept."""
    require_current_schema(engine, "capture")
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
        tables, without = capturable(conn, settings)
        refuse_status_columns_gone(conn, settings, status_columns_gone(conn, without))
        return install_statements(ddl, conn, tables, ops.mode_lock_key)

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
                record_mapping(conn, intent[1] if intent is not None else "unistatus")
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
        owners = other_installations(engine) if _sqlstate(exc) == DUPLICATE_OBJECT else []
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
