"""the global mode and phase keys refuse a value the systems' own keys do not all have.

Since revisions 0015 and 0017 each legacy system has its own ``mode.<SYSTEM>`` and
``phase.<SYSTEM>``; the global ``mode`` and ``phase`` are summaries unistatus keeps (the
value every system has, absent while they differ) for processes of older versions to
read. An older version still running after `unistatus init` upgraded the database (a
rolling deploy) writes only the global key: its `rollback --emergency`, its monitor's
automated rollback, its `phase advance` and `mode set` said "done" while every current
adapter, reading the systems' own keys, went on as before, or split the adapters between
two modes. A trigger now refuses, with a message saying why, an INSERT or UPDATE of
``mode`` or ``phase`` whose value differs from a system's own key: such a write comes
from an older version (unistatus writes the summary only as the value they all have,
after writing them). The older command fails and changes nothing in that transaction;
run it with the current version.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

from alembic import context, op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# --- frozen at this revision (unistatus.db.control.MODE_KEY, phases.PHASE_KEY).
SUMMARY_KEYS = ("mode", "phase")
TABLE = "unistatus_control"
NAME = "unistatus_control_summary_guard"
MESSAGE = (
    "unistatus: this database was upgraded by a newer unistatus (revision 0021), whose "
    "mode and phase are each legacy system''s own: the global key may only hold the value "
    "every system has. Run this command with the current version (nothing was changed)"
)


def _schema() -> str | None:
    schema: str | None = context.config.attributes.get("schema")
    return schema


def _named(name: str) -> str:
    schema = _schema()
    return name if schema is None else f"{schema}.{name}"


def _disagrees(control: str, new: str) -> str:
    """SQL: the written key is a summary and some system's own key holds another value."""
    keys = ", ".join(f"'{k}'" for k in SUMMARY_KEYS)
    return (
        f"{new}.key IN ({keys}) AND EXISTS (SELECT 1 FROM {control} AS own "
        f"WHERE own.key LIKE {new}.key || '.%' AND own.value <> {new}.value)"
    )


def upgrade() -> None:
    control = _named(TABLE)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
CREATE OR REPLACE FUNCTION {_named(NAME)}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {_disagrees(control, "NEW")} THEN
        RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END
$$
"""
        )
        op.execute(
            f"CREATE TRIGGER {NAME} BEFORE INSERT OR UPDATE ON {control} "
            f"FOR EACH ROW EXECUTE FUNCTION {_named(NAME)}()"
        )
        return
    for event in ("INSERT", "UPDATE"):
        op.execute(
            f"CREATE TRIGGER {NAME}_{event.lower()} BEFORE {event} ON {TABLE} "
            f"WHEN {_disagrees(TABLE, 'NEW')} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )


def downgrade() -> None:
    control = _named(TABLE)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {NAME} ON {control}")
        op.execute(f"DROP FUNCTION IF EXISTS {_named(NAME)}()")
        return
    for event in ("insert", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS {NAME}_{event}")
