"""retire legacy columns: drop the legacy status columns (phase 4 cleanup), reversibly.

The only revision of the ``retire`` branch, off the main chain, applied only by
``unistatus retire legacy-columns`` (``--undo``: ``downgrade retire@base``). upgrade()
re-checks the gates under the exclusive mode lock, then drops; downgrade() refills the
columns from ``unified_transactions.legacy_status``. It runs no application code: its
checks are frozen here. The branch, the gates and the inputs: docs/retire.md.

Revision ID: 0006
Revises: (branch base; depends on 0009)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from alembic.util import load_python_file
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = None
branch_labels = ("retire",)
depends_on = "0009"

# --- frozen at this revision -----------------------------------------------------------
SYSTEMS = ("CASHOUT", "ESCROW", "EXCHANGE")
CONTROL_KEY = "legacy_columns"
MODE_KEY = "mode"
DEFAULT_MODE = "LEGACY_ONLY"
FROZEN_MODE = "UNIFIED_ONLY"
ARCHIVE_KEY = "archive"
MODE_LOCK_KEY = 0x756E6973  # the advisory lock every adapter write holds shared
UTC_TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ours(name: str, *columns: sa.ColumnClause[Any]) -> sa.TableClause:
    """One of unistatus's tables, in its schema (the ``schema`` attribute; None: bare)."""
    return sa.table(name, *columns, schema=context.config.attributes.get("schema"))


def _control() -> sa.TableClause:
    return _ours(
        "unistatus_control",
        sa.column("key", sa.String),
        sa.column("value", sa.String),
        sa.column("updated_at", UTC_TIME),
        sa.column("updated_by", sa.String),
    )


def _control_log() -> sa.TableClause:
    return _ours(
        "unistatus_control_log",
        sa.column("id", sa.BigInteger),
        sa.column("key", sa.String),
        sa.column("old_value", sa.String),
        sa.column("new_value", sa.String),
        sa.column("actor", sa.String),
        sa.column("reason", sa.Text),
        sa.column("metadata", JSON),
        sa.column("created_at", UTC_TIME),
    )


def _unified() -> sa.TableClause:
    return _ours(
        "unified_transactions",
        sa.column("id", sa.String),
        sa.column("legacy_system", sa.String),
        sa.column("legacy_id", sa.BigInteger),
        sa.column("legacy_status", sa.String),
    )


def _pending() -> sa.TableClause:
    return _ours(
        "unistatus_pending_legacy",
        sa.column("id", sa.BigInteger),
        sa.column("transaction_id", sa.String),
        sa.column("replayed_at", UTC_TIME),
    )


def _prepare() -> sa.Connection:
    """Unbounded statements, bounded lock waits, and the exclusive mode lock (PostgreSQL)."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        lock_ms = int(context.config.attributes["lock_timeout_ms"])
        bind.exec_driver_sql("SET LOCAL statement_timeout = 0")
        bind.exec_driver_sql(f"SET LOCAL lock_timeout = {lock_ms}")
        key = int(context.config.attributes.get("mode_lock_key", MODE_LOCK_KEY))
        bind.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
    return bind


def _legacy_tables() -> dict[str, dict[str, Any]]:
    """{system: {"table", "schema", "id", "status"}}: the deployment's legacy tables (a
    schema of None: the bare name, where the application's search_path finds it)."""
    given = context.config.attributes["legacy_tables"]
    return {system: dict(given[system]) for system in SYSTEMS}


def _legacy(bind: sa.Connection, spec: dict[str, Any]) -> sa.Table:
    """The legacy table as the database has it now, in the application's schema (its
    foreign keys left unresolved: they name the application's tables, not ours)."""
    return sa.Table(
        spec["table"],
        sa.MetaData(),
        schema=spec.get("schema"),
        autoload_with=bind,
        resolve_fks=False,
    )


def _control_value(bind: sa.Connection, key: str) -> str | None:
    control = _control()
    q = sa.select(control.c.value).where(control.c.key == key)
    value = bind.execute(q).scalar_one_or_none()
    return None if value is None else str(value)


def _record(bind: sa.Connection, value: str, metadata: dict[str, Any]) -> None:
    """Set the control value ``legacy_columns`` and log the change (who, why, what)."""
    attrs = context.config.attributes
    actor, reason = attrs.get("actor"), attrs.get("reason")
    control, control_log = _control(), _control_log()
    if not isinstance(actor, str) or not actor.strip():
        actor = "alembic"
    if not isinstance(reason, str) or not reason.strip():
        reason = f"revision 0006: legacy status columns {value}"
    now = datetime.now(UTC)
    old = _control_value(bind, CONTROL_KEY)
    if old is None:
        bind.execute(
            sa.insert(control).values(
                key=CONTROL_KEY, value=value, updated_at=now, updated_by=actor
            )
        )
    else:
        bind.execute(
            sa.update(control)
            .where(control.c.key == CONTROL_KEY)
            .values(value=value, updated_at=now, updated_by=actor)
        )
    bind.execute(
        sa.insert(control_log).values(
            {
                control_log.c.key: CONTROL_KEY,
                control_log.c.old_value: old,
                control_log.c.new_value: value,
                control_log.c.actor: actor,
                control_log.c.reason: reason,
                control_log.c["metadata"]: metadata,
                control_log.c.created_at: now,
            }
        )
    )


def _blockers(bind: sa.Connection, legacy: dict[str, dict[str, str]]) -> list[str]:
    """Why the columns may not be dropped now (empty: they may)."""
    problems: list[str] = []
    unified, pending = _unified(), _pending()
    mode = _control_value(bind, MODE_KEY) or DEFAULT_MODE
    if mode != FROZEN_MODE:
        problems.append(
            f"the mode is {mode}, not UNIFIED_ONLY: legacy must be frozen first "
            "(phase 4: `unistatus phase advance`)"
        )
    if _control_value(bind, ARCHIVE_KEY) is None:
        problems.append(
            "no verified archive is recorded: run `unistatus archive export --out DIR` "
            "then `unistatus archive verify DIR`"
        )
    unreplayed = sa.select(pending.c.id).where(pending.c.replayed_at.is_(None)).limit(1)
    project = bind.execute(unreplayed).first() is not None
    inspector = sa.inspect(bind)
    refusals = _helper("r001_refusals.py")  # what `unistatus retire` refuses as well
    for system in SYSTEMS:
        spec = legacy[system]
        if view := refusals.not_a_table(bind, spec, _table_sql(bind, spec)):
            problems.append(view)  # DROP COLUMN needs a table
            continue
        if not inspector.has_table(spec["table"], schema=spec.get("schema")):
            problems.append(f"legacy table {spec['table']!r} does not exist")
            continue
        table = _legacy(bind, spec)
        if spec["status"] not in table.c:
            problems.append(f"{spec['table']}.{spec['status']} is already missing")
            continue
        if reading := refusals.triggers_reading(bind, spec, _table_sql(bind, spec)):
            problems.append(reading)  # a PL/pgSQL body is no dependency: the drop goes on
        naming = [name for name, sql in _sqlite_triggers(bind, spec) if _names(sql, spec)]
        if naming:
            problems.append(
                f"{spec['table']}.{spec['status']}: trigger(s) {', '.join(naming)} on "
                f"{spec['table']} name the column: SQLite drops a column by copying its "
                "table, and the triggers created again after the copy would fail each write "
                "they fire on without it; drop them first (the others on the table are "
                "kept), create them again after an undo"
            )
        id_col, status_col = table.c[spec["id"]], _as_text(table.c[spec["status"]])
        join = sa.and_(unified.c.legacy_system == system, unified.c.legacy_id == id_col)
        lost = bind.execute(
            sa.select(sa.func.count())
            .select_from(table.outerjoin(unified, join))
            .where(
                sa.or_(
                    unified.c.id.is_(None),
                    sa.and_(unified.c.legacy_status.is_(None), status_col.is_not(None)),
                )
            )
        ).scalar_one()
        if lost:
            problems.append(
                f"{lost} row(s) of {spec['table']} could not be restored by the undo (no "
                "unified row, or no legacy_status on it): backfill / repair them first"
            )
        # A row with a change awaiting replay is compared as it will be after the replay:
        # legacy is frozen in UNIFIED_ONLY and legacy_status already holds the newer value.
        awaiting = sa.exists().where(
            pending.c.transaction_id == unified.c.id, pending.c.replayed_at.is_(None)
        )
        status = sa.case((awaiting, unified.c.legacy_status), else_=status_col)
        drift = bind.execute(
            sa.select(sa.func.count())
            .select_from(table.join(unified, join))
            .where(
                unified.c.legacy_status.is_not(None),
                (status if project else status_col).is_distinct_from(unified.c.legacy_status),
            )
        ).scalar_one()
        if drift:
            problems.append(
                f"{drift} row(s) of {spec['table']} have a status that differs from their "
                "unified row's legacy_status, so the undo would restore the wrong value "
                "(legacy_status_drift: a legacy-only change that kept the unified status): "
                "run `unistatus repair --strategy legacy_wins --reason TEXT` (it fixes this "
                "kind in UNIFIED_ONLY too), then retire"
            )
    return problems


def upgrade() -> None:
    bind = _prepare()
    legacy = _legacy_tables()
    problems = _blockers(bind, legacy)
    if problems:
        refused: type[Exception] = context.config.attributes.get("gate_error", RuntimeError)
        raise refused(
            "revision 0006 refused (run `unistatus retire legacy-columns`): " + "; ".join(problems)
        )
    dropped: dict[str, Any] = {}
    for system in SYSTEMS:
        spec = legacy[system]
        column = _legacy(bind, spec).c[spec["status"]]
        dropped[system] = {
            "table": spec["table"],
            "column": spec["status"],
            "length": getattr(column.type, "length", None),
            "nullable": bool(column.nullable),
            # A type of the application's (a PostgreSQL enum or domain), by its SQL name:
            # the column comes back as one (dropping the column leaves the type).
            "type": _type_name(bind, column.type),
        }
        if bind.dialect.name == "postgresql":
            definitions = _helper("r001_pg_definitions.py").definitions
            dropped[system].update(definitions(bind, _table_sql(bind, spec), spec["status"]))
            column_sql = (_table_sql(bind, spec), spec["status"])
            dropped[system].update(_helper("r001_pg_column.py").recorded_type(bind, *column_sql))
        # SQLite: dropped in place, the table's CREATE statement recorded for the undo
        # (r001_sqlite_table.py); where the table is copied instead, the copy drops its
        # triggers: the application's are created again from their own SQL after it, in
        # this transaction (those naming the column were refused above).
        again = _sqlite_triggers(bind, spec)
        if bind.dialect.name == "sqlite":
            dropped[system].update(_helper("r001_sqlite_table.py").drop_column(bind, spec, again))
        else:
            with op.batch_alter_table(spec["table"], schema=spec.get("schema")) as batch:
                batch.drop_column(spec["status"])
        if again:
            dropped[system]["triggers_kept"] = [name for name, _sql in again]
    _record(bind, "dropped", dropped)


def _sqlite_triggers(bind: sa.Connection, spec: dict[str, Any]) -> list[tuple[str, str]]:
    """SQLite: the application's triggers on the legacy table (name, SQL), in creation
    order; none elsewhere (PostgreSQL drops a column in place, keeping the triggers)."""
    if bind.dialect.name != "sqlite":
        return []
    preparer = bind.dialect.identifier_preparer
    catalog = "sqlite_master"
    if spec.get("schema"):
        catalog = f"{preparer.quote_schema(spec['schema'])}.{catalog}"
    rows = bind.execute(
        sa.text(
            f"SELECT name, sql FROM {catalog} WHERE type = 'trigger' "
            "AND tbl_name = :t COLLATE NOCASE "
            "AND name NOT LIKE 'unistatus\\_%' ESCAPE '\\' ORDER BY rowid"
        ),
        {"t": spec["table"]},
    ).all()
    return [(str(row.name), str(row.sql)) for row in rows if row.sql]


def _names(sql: str, spec: dict[str, Any]) -> bool:
    """Whether a trigger's SQL names the status column (a word, bare or quoted)."""
    column = re.escape(spec["status"])
    return re.search(rf"(?<![\w$]){column}(?![\w$])", sql, re.IGNORECASE) is not None


def _helper(name: str) -> Any:
    """A module of this revision's beside versions/ (r001_sqlite_table.py: SQLite's table
    work; r001_pg_column.py: the column's type; r001_pg_definitions.py: its DEFAULT,
    indexes and constraints; r001_refusals.py: a view, a trigger reading the column),
    frozen with it, loaded by its path."""
    return load_python_file(str(Path(__file__).resolve().parents[1]), name)


def downgrade() -> None:
    bind = _prepare()
    dropped = _dropped_columns(bind)
    pg_column = _helper("r001_pg_column.py")
    if bind.dialect.name == "postgresql":  # before anything changes: what would not fit
        problems = []
        for system, spec in _legacy_tables().items():
            table = _legacy(bind, spec)
            value = _refill_value(system, table.c[spec["id"]])
            args = (dropped.get(system, {}), spec["table"], table.c[spec["id"]], value)
            problems.append(pg_column.too_long(bind, *args))
        if any(problems):
            refused: type[Exception] = context.config.attributes.get("gate_error", RuntimeError)
            raise refused("the undo of revision 0006 refused: " + "; ".join(filter(None, problems)))
    restored: dict[str, Any] = {}
    for system, spec in _legacy_tables().items():
        info = dropped.get(system, {})
        kind, cast_to = pg_column.restored_types(info)
        # The refill writes every row: the application's own UPDATE triggers must not
        # take it for its changes (an audit row, a payout queued, updated_at stamped).
        again = _quiet_app_triggers(bind, spec)
        rebuilt = False  # SQLite: created again from the CREATE statement recorded
        if spec["status"] not in _legacy(bind, spec).c:
            if bind.dialect.name == "sqlite":
                rebuilt = _helper("r001_sqlite_table.py").create_again(
                    bind, spec, info, _unified(), system
                )
            if not rebuilt:
                with op.batch_alter_table(spec["table"], schema=spec.get("schema")) as batch:
                    batch.add_column(sa.Column(spec["status"], kind, nullable=True))
        table = _legacy(bind, spec)
        legacy_status = _refill_value(system, table.c[spec["id"]])
        if cast_to is not None:  # to the type without its length: the assignment checks it
            cast_to = pg_column.refill_type(bind, _table_sql(bind, spec), spec["status"])
        value = legacy_status if cast_to is None else sa.cast(legacy_status, cast_to)
        result = bind.execute(sa.update(table).values({table.c[spec["status"]]: value}))
        covered = _mark_refilled(bind, system, table.c[spec["id"]])
        if info.get("nullable") is False and not rebuilt:
            with op.batch_alter_table(spec["table"], schema=spec.get("schema")) as batch:
                batch.alter_column(spec["status"], existing_type=kind, nullable=False)
        for statement in again:
            bind.exec_driver_sql(statement)
        restored[system] = {
            "table": spec["table"],
            "rows": result.rowcount,
            "pending_covered": covered,
            "app_triggers_quieted": len(again),
        }
        if bind.dialect.name == "postgresql":
            recreate = _helper("r001_pg_definitions.py").recreate
            restored[system].update(recreate(bind, _table_sql(bind, spec), spec, info))
    _record(bind, "restored", restored)


def _refill_value(system: str, legacy_id: sa.Column[Any]) -> sa.ColumnElement[Any]:
    """A legacy row's status as the undo refills it: its unified row's legacy_status."""
    unified = _unified()
    return (
        sa.select(unified.c.legacy_status)
        .where(unified.c.legacy_system == system, unified.c.legacy_id == legacy_id)
        .scalar_subquery()
    )


# The application's triggers that an UPDATE of a legacy table fires (PostgreSQL): row or
# statement UPDATE triggers (pg_trigger.tgtype's bit 16) of the table and of every table
# under it (a partition, an inheriting table: the refill's UPDATE writes their rows),
# enabled for an ordinary session ('O') or always ('A'); not a constraint's internal one,
# nor unistatus's own (its capture's are gone while the columns are retired, and are
# installed again after the refill). Parents first (ENABLE on a parent reaches its
# partitions, then each gets its own state back).
_PG_APP_TRIGGERS = sa.text(
    "WITH RECURSIVE rel(oid, depth) AS ("
    " SELECT CAST(to_regclass(:rel) AS oid), 0"
    " UNION SELECT i.inhrelid, rel.depth + 1 FROM pg_catalog.pg_inherits i"
    " JOIN rel ON i.inhparent = rel.oid) "
    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS on_table, "
    "t.tgname AS name, t.tgenabled AS enabled FROM pg_catalog.pg_trigger t "
    "JOIN rel ON t.tgrelid = rel.oid JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE NOT t.tgisinternal AND t.tgtype & 16 <> 0 AND t.tgenabled IN ('O', 'A') "
    "AND t.tgname NOT LIKE 'unistatus\\_%' AND c.relkind <> 'f' "
    "GROUP BY t.oid, n.nspname, c.relname, t.tgname, t.tgenabled "
    "ORDER BY min(rel.depth), 1, 2"
)
_ENABLE = {"O": "ENABLE TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}


def _quiet_app_triggers(bind: sa.Connection, spec: dict[str, Any]) -> list[str]:
    """The application's own triggers on the legacy table kept from firing until the
    refill is done; the statements that put them back as they were, to run before the
    undo commits.

    PostgreSQL: the table (and every table under it) locked ACCESS EXCLUSIVE for the rest
    of the transaction (what adding the column takes anyway; taken here also when the
    column is already back), then ``DISABLE TRIGGER`` each enabled one; a trigger already
    disabled, or enabled only for replication, is left as it is. No other session sees
    them off: the catalog change is the transaction's own, and the lock keeps every
    writer out until it commits. (Not ``session_replication_role``: it needs a
    superuser.)

    SQLite: each trigger on the table dropped, to be created again from its own SQL
    (``sqlite_master``), in the same transaction (SQLite's DDL is transactional). Also
    what keeps them through a NOT NULL column's table copy, which drops a table's
    triggers with it.
    """
    table = _table_sql(bind, spec)
    preparer = bind.dialect.identifier_preparer
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        again = []
        for row in bind.execute(_PG_APP_TRIGGERS, {"rel": table}).all():
            name = preparer.quote(row.name)
            # ONLY: each table's own trigger (on a partitioned table the statement would
            # reach the partitions' clones, enabling one the application had disabled).
            bind.exec_driver_sql(f"ALTER TABLE ONLY {row.on_table} DISABLE TRIGGER {name}")
            again.append(f"ALTER TABLE ONLY {row.on_table} {_ENABLE[row.enabled]} {name}")
        return again
    triggers = _sqlite_triggers(bind, spec)
    where = f"{preparer.quote_schema(spec['schema'])}." if spec.get("schema") else ""
    for name, _sql in triggers:
        bind.exec_driver_sql(f"DROP TRIGGER {where}{preparer.quote(name)}")
    return [sql for _name, sql in triggers]


def _table_sql(bind: sa.Connection, spec: dict[str, Any]) -> str:
    """The legacy table's name in SQL (schema-qualified when the config names one)."""
    preparer = bind.dialect.identifier_preparer
    name = preparer.quote(spec["table"])
    return f"{preparer.quote_schema(spec['schema'])}.{name}" if spec.get("schema") else name


def _mark_refilled(bind: sa.Connection, system: str, legacy_id: sa.Column[Any]) -> int:
    """Mark replayed the unreplayed changes of every transaction whose legacy row the
    refill just wrote: its ``legacy_status`` is their result, so legacy already holds it.

    Left pending, a later replay would start them from the status legacy held before
    them, meet the newer one the refill wrote, and keep a change made after the undo as
    a conflict (that write lost to legacy). In the refill's transaction, under the
    exclusive mode lock: no change is recorded between the two. A transaction with no
    legacy row yet (born in UNIFIED_ONLY) is left to the replay, which creates it.
    """
    unified, pending = _unified(), _pending()
    refilled = (
        sa.select(unified.c.id)
        .select_from(unified.join(legacy_id.table, unified.c.legacy_id == legacy_id))
        .where(unified.c.legacy_system == system, unified.c.id == pending.c.transaction_id)
    )
    result = bind.execute(
        sa.update(pending)
        .where(pending.c.replayed_at.is_(None), refilled.exists())
        .values(replayed_at=datetime.now(UTC))
    )
    return int(result.rowcount)


def _plain_text(kind: sa.types.TypeEngine[Any]) -> bool:
    return isinstance(kind, sa.String) and not isinstance(kind, sa.Enum)


def _as_text(status: sa.Column[Any]) -> sa.ColumnElement[Any]:
    """A legacy status column as text: an enum's (or a domain's) values cast
    (PostgreSQL compares an enum with text only so)."""
    return status if _plain_text(status.type) else sa.cast(status, sa.String)


def _type_name(bind: sa.Connection, kind: sa.types.TypeEngine[Any]) -> str | None:
    """The SQL name of a named type of the application's (an enum, a domain: schema
    included when reflection gave one); None for a plain text type."""
    name = getattr(kind, "name", None)
    if _plain_text(kind) or not name:
        return None
    preparer = bind.dialect.identifier_preparer
    schema = getattr(kind, "schema", None)
    quoted = preparer.quote(name)
    return f"{preparer.quote_schema(schema)}.{quoted}" if schema else quoted


def _dropped_columns(bind: sa.Connection) -> dict[str, Any]:
    """What upgrade() recorded about the columns it dropped ({} if nothing recorded)."""
    control_log = _control_log()
    meta = bind.execute(
        sa.select(control_log.c["metadata"])
        .where(control_log.c.key == CONTROL_KEY, control_log.c.new_value == "dropped")
        .order_by(control_log.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return dict(meta) if isinstance(meta, dict) else {}
