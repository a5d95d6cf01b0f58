"""Foundation: reference legacy tables, unified_transactions, history, control, queues.

The base of the ``main`` branch: what ``unistatus init`` installs (0001 .. 0005, then
0007 onwards). Revision 0006 (file ``r001_...``) is the ``retire`` branch, off 0009.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = ("main",)
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric(20, 8)
UTC = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def _reference_legacy_tables() -> list[tuple[str, str | None]]:
    """The demo/test legacy tables to create: (name, schema) of those the config uses and
    the database lacks. A legacy table's schema is the application's (the config's, or
    where its bare name resolves), never unistatus's own."""
    attributes = context.config.attributes
    wanted = attributes.get("reference_legacy_tables", [])
    where = {
        spec["table"]: spec.get("schema") for spec in attributes.get("legacy_tables", {}).values()
    }
    inspector = sa.inspect(op.get_bind())
    return [
        (name, where.get(name))
        for name in wanted
        if not inspector.has_table(name, schema=where.get(name))
    ]


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    schema = _schema()
    for name, legacy_schema in _reference_legacy_tables():
        op.create_table(
            name,
            sa.Column("id", BIGID, primary_key=True),
            sa.Column("user_id", sa.BigInteger, nullable=False),
            sa.Column("amount", MONEY, nullable=False),
            sa.Column("currency", sa.String(10), nullable=False),
            sa.Column("status", sa.String(64), nullable=True),
            sa.Column("created_at", UTC, nullable=False),
            sa.Column("updated_at", UTC, nullable=False),
            schema=legacy_schema,
            # SQLite: never the id of a deleted row again (its unified row is a record).
            sqlite_autoincrement=True,
        )
    op.create_table(
        "unified_transactions",
        sa.Column("id", sa.String(18), primary_key=True),
        sa.Column("transaction_type", sa.String(32), nullable=False),
        sa.Column("legacy_system", sa.String(16), nullable=True),
        sa.Column("legacy_id", sa.BigInteger, nullable=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("currency", sa.String(10), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("legacy_status", sa.String(64), nullable=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("metadata", JSON, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.UniqueConstraint("legacy_system", "legacy_id", name="uq_unified_legacy_ref"),
        sa.CheckConstraint(
            "origin IN ('dual_write','backfill','repair','unified')", name="ck_origin"
        ),
        sa.CheckConstraint("amount >= 0", name="ck_unified_amount"),
        schema=schema,
    )
    op.create_index("ix_unified_updated_at", "unified_transactions", ["updated_at"], schema=schema)
    op.create_index("ix_unified_status", "unified_transactions", ["status"], schema=schema)
    op.create_table(
        "unified_status_history",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("transaction_id", sa.String(18), nullable=True),
        sa.Column("legacy_system", sa.String(16), nullable=True),
        sa.Column("legacy_id", sa.BigInteger, nullable=True),
        sa.Column("from_status", sa.String(32), nullable=True),
        sa.Column("to_status", sa.String(32), nullable=True),
        sa.Column("from_legacy_status", sa.String(64), nullable=True),
        sa.Column("to_legacy_status", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("triggered_by", sa.String(128), nullable=False),
        sa.Column("metadata", JSON, nullable=True),
        sa.Column("operation_id", sa.String(36), nullable=False),
        sa.Column("mode", sa.String(40), nullable=False),
        sa.Column("override", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", UTC, nullable=False),
        schema=schema,
    )
    op.create_index(
        "ix_history_transaction", "unified_status_history", ["transaction_id"], schema=schema
    )
    op.create_index(
        "ix_history_legacy", "unified_status_history", ["legacy_system", "legacy_id"], schema=schema
    )
    op.create_table(
        "unistatus_control",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        schema=schema,
    )
    op.create_table(
        "unistatus_control_log",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("old_value", sa.String(256), nullable=True),
        sa.Column("new_value", sa.String(256), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("metadata", JSON, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        schema=schema,
    )
    op.create_table(
        "unistatus_repair_queue",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("transaction_id", sa.String(18), nullable=True),
        sa.Column("legacy_system", sa.String(16), nullable=True),
        sa.Column("legacy_id", sa.BigInteger, nullable=True),
        sa.Column("operation_id", sa.String(36), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("resolved_at", UTC, nullable=True),
        sa.Column("resolution", sa.Text, nullable=True),
        schema=schema,
    )
    op.create_index(
        "ix_repair_unresolved", "unistatus_repair_queue", ["resolved_at"], schema=schema
    )
    op.create_table(
        "unistatus_pending_legacy",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("transaction_id", sa.String(18), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("legacy_status", sa.String(64), nullable=True),
        sa.Column("operation_id", sa.String(36), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("replayed_at", UTC, nullable=True),
        schema=schema,
    )
    op.create_index(
        "ix_pending_unreplayed", "unistatus_pending_legacy", ["replayed_at"], schema=schema
    )
    op.create_index(
        "ix_pending_transaction", "unistatus_pending_legacy", ["transaction_id"], schema=schema
    )


def downgrade() -> None:
    schema = _schema()
    for name in (
        "unistatus_pending_legacy",
        "unistatus_repair_queue",
        "unistatus_control_log",
        "unistatus_control",
        "unified_status_history",
        "unified_transactions",
    ):
        op.drop_table(name, schema=schema)
