"""Idempotency keys of creates (docs/adapter.md): ``unistatus_idempotency_keys``.

One row per key, written in the same transaction as the create it names; its primary
key makes a repeated (or concurrent) create with the same key fail and roll back, and
the adapter returns the stored result instead.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "unistatus_idempotency_keys",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("operation_id", sa.String(36), nullable=False),
        sa.Column("transaction_id", sa.String(18), nullable=True),
        sa.Column("legacy_system", sa.String(16), nullable=True),
        sa.Column("legacy_id", sa.BigInteger, nullable=True),
        sa.Column("mode", sa.String(40), nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("legacy_status", sa.String(64), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_unistatus_idempotency_keys"),
        schema=schema,
    )
    op.create_index(
        "ix_idempotency_keys_created_at",
        "unistatus_idempotency_keys",
        ["created_at"],
        schema=schema,
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_index(
        "ix_idempotency_keys_created_at", table_name="unistatus_idempotency_keys", schema=schema
    )
    op.drop_table("unistatus_idempotency_keys", schema=schema)
