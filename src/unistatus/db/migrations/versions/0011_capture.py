"""capture: the tables of the capture of writes that bypass the adapter (docs/capture.md).

- ``unistatus_capture_writers``: who wrote the legacy tables or ``unified_transactions``
  without unistatus, with counts (one row per writer, target and session: no lock queue);
- ``unistatus_capture_changed``: entities changed while the mode was LEGACY_ONLY;
- ``unistatus_writer_marks``: SQLite's writer mark (PostgreSQL uses a setting);
- ``unistatus_backfill_quarantine.writer``: who wrote a quarantined value;
- PostgreSQL: ``unistatus_locked_mode()`` also sets the writer mark (the setting
  ``unistatus.writer``, to the mode it read under the lock), so the adapter's writes are
  marked with no extra round trip.

The triggers themselves are not part of the schema: ``unistatus capture enable``
generates them from the mapping and the configured legacy tables. The downgrade drops
this installation's (they would name tables it drops): on PostgreSQL the capture's
functions in its schema and the triggers that call them, never another installation's.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)
# Frozen copies of the values at this revision (unistatus.db.mode_lock_keys.MODE_LOCK_KEY, the
# control table and key, the default mode, unistatus.db.writer_mark.WRITER_SETTING, the
# prefix of every object `unistatus capture enable` creates). An installation in a
# schema of its own passes its lock key and its schema as config attributes (as 0007).
MODE_LOCK_KEY = 0x756E6973
WRITER_SETTING = "unistatus.writer"
CAPTURE_PREFIX = "unistatus_capture_"
QUARANTINE = "unistatus_backfill_quarantine"
# The functions `unistatus capture enable` may create (unistatus.migration.capture_ddl.
# function_names at this revision): one per legacy system, the detector, the catch-up.
CAPTURE_FUNCTIONS = [
    f"{CAPTURE_PREFIX}{name}" for name in ("cashout", "escrow", "exchange", "unified", "catch_up")
]

LOCKED_MODE_MARKING = f"""
CREATE OR REPLACE FUNCTION {{function}}() RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    current_mode text;
BEGIN
    -- Held until the transaction ends; a mode switch waits for it, or this for the switch.
    PERFORM pg_advisory_xact_lock_shared({{key}});
    -- A VOLATILE function's query takes a new snapshot: a switch that committed while
    -- the lock was awaited is seen.
    current_mode := coalesce(
        (SELECT value FROM {{control}} WHERE key = 'mode'), 'LEGACY_ONLY'
    );
    -- The writer mark: this transaction writes for unistatus, under this mode.
    PERFORM set_config('{WRITER_SETTING}', current_mode, true);
    RETURN current_mode;
END
$$
"""
# Revision 0007's body, restored by the downgrade.
LOCKED_MODE_0007 = """
CREATE OR REPLACE FUNCTION {function}() RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    -- Held until the transaction ends; a mode switch waits for it, or this for the switch.
    PERFORM pg_advisory_xact_lock_shared({key});
    -- A VOLATILE function's query takes a new snapshot: a switch that committed while
    -- the lock was awaited is seen.
    RETURN coalesce(
        (SELECT value FROM {control} WHERE key = 'mode'), 'LEGACY_ONLY'
    );
END
$$
"""


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def _function(body: str) -> str:
    """``body`` for this installation: its function, control table and mode lock key."""
    schema = _schema()
    prefix = "" if schema is None else f"{schema}."
    key = int(context.config.attributes.get("mode_lock_key", MODE_LOCK_KEY))
    return body.format(
        function=f"{prefix}unistatus_locked_mode",
        control=f"{prefix}unistatus_control",
        key=key,
    )


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "unistatus_capture_writers",
        sa.Column("writer", sa.String(128), nullable=False),
        sa.Column("system", sa.String(16), nullable=False),
        sa.Column("shard", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("writes", sa.BigInteger, nullable=False),
        sa.Column("flagged", sa.BigInteger, nullable=False),
        sa.Column("unmappable", sa.BigInteger, nullable=False),
        sa.Column("first_seen_at", UTC, nullable=False),
        sa.Column("last_seen_at", UTC, nullable=False),
        sa.Column("last_mode", sa.String(40), nullable=False),
        sa.Column("client_addr", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("writer", "system", "shard"),
        schema=schema,
    )
    op.create_index(
        "ix_capture_writers_last_seen",
        "unistatus_capture_writers",
        ["last_seen_at"],
        schema=schema,
    )
    op.create_table(
        "unistatus_capture_changed",
        sa.Column("system", sa.String(16), nullable=False),
        sa.Column("legacy_id", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("changed_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("system", "legacy_id"),
        schema=schema,
    )
    op.create_table(
        "unistatus_writer_marks",
        sa.Column("writer", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("writer"),
        schema=schema,
    )
    with op.batch_alter_table(QUARANTINE, schema=schema) as batch:
        batch.add_column(sa.Column("writer", sa.String(128), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function(LOCKED_MODE_MARKING))


def downgrade() -> None:
    bind = op.get_bind()
    schema = _schema()
    _drop_capture_objects(bind, schema)
    if bind.dialect.name == "postgresql":
        op.execute(_function(LOCKED_MODE_0007))
    with op.batch_alter_table(QUARANTINE, schema=schema) as batch:
        batch.drop_column("writer")
    op.drop_table("unistatus_writer_marks", schema=schema)
    op.drop_table("unistatus_capture_changed", schema=schema)
    op.drop_index(
        "ix_capture_writers_last_seen", table_name="unistatus_capture_writers", schema=schema
    )
    op.drop_table("unistatus_capture_writers", schema=schema)


def _drop_capture_objects(bind: sa.Connection, schema: str | None) -> None:
    """Every trigger and function `unistatus capture enable` made for this installation
    (they use these tables): its functions in its schema (``schema``, or the current one
    where its tables are named bare) and the triggers that call them."""
    like = CAPTURE_PREFIX.replace("_", "\\_") + "%"
    if bind.dialect.name == "postgresql":
        where = {
            "schema": schema or bind.execute(sa.text("SELECT current_schema()")).scalar_one(),
            "names": CAPTURE_FUNCTIONS,
        }
        ours = (
            "FROM pg_catalog.pg_proc p WHERE p.pronamespace = CAST(:schema AS regnamespace) "
            "AND p.proname IN :names"
        )
        expanding: sa.BindParameter[list[str]] = sa.bindparam("names", expanding=True)
        triggers = bind.execute(
            sa.text(
                "SELECT t.tgname, t.tgrelid::regclass::text FROM pg_catalog.pg_trigger t "
                f"WHERE NOT t.tgisinternal AND t.tgfoid IN (SELECT p.oid {ours})"
            ).bindparams(expanding),
            where,
        ).all()
        for name, table in triggers:
            bind.exec_driver_sql(f'DROP TRIGGER IF EXISTS "{name}" ON {table}')
        functions = bind.execute(
            sa.text(f"SELECT p.oid::regprocedure::text {ours}").bindparams(expanding), where
        ).scalars()
        for signature in list(functions):
            bind.exec_driver_sql(f"DROP FUNCTION IF EXISTS {signature}")
    elif bind.dialect.name == "sqlite":
        names = bind.execute(
            sa.text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                "AND name LIKE :like ESCAPE '\\'"
            ),
            {"like": like},
        ).scalars()
        for name in list(names):
            bind.exec_driver_sql(f'DROP TRIGGER IF EXISTS "{name}"')
