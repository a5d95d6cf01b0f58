"""Backfill: jobs, key-range chunks (the checkpoint), and the quarantine.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
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
        "unistatus_backfill_jobs",
        sa.Column("system", sa.String(16), primary_key=True),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("high_water_mark", sa.BigInteger, nullable=True),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=True),
        schema=schema,
    )
    op.create_table(
        "unistatus_backfill_chunks",
        sa.Column("system", sa.String(16), primary_key=True),
        sa.Column("start_id", sa.BigInteger, primary_key=True),
        sa.Column("end_id", sa.BigInteger, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("inserted", sa.Integer, nullable=False, server_default="0"),
        sa.Column("already_present", sa.Integer, nullable=False, server_default="0"),
        sa.Column("quarantined", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("done_at", UTC, nullable=True),
        schema=schema,
    )
    op.create_index(
        "ix_backfill_chunks_claim", "unistatus_backfill_chunks", ["state", "system"], schema=schema
    )
    op.create_table(
        "unistatus_backfill_quarantine",
        sa.Column("system", sa.String(16), primary_key=True),
        sa.Column("legacy_id", sa.BigInteger, primary_key=True),
        sa.Column("raw_status", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("first_seen_at", UTC, nullable=False),
        sa.Column("last_seen_at", UTC, nullable=False),
        sa.Column("resolved_at", UTC, nullable=True),
        sa.Column("resolution", sa.String(32), nullable=True),
        schema=schema,
    )
    op.create_index(
        "ix_backfill_quarantine_unresolved",
        "unistatus_backfill_quarantine",
        ["resolved_at"],
        schema=schema,
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_index(
        "ix_backfill_quarantine_unresolved", "unistatus_backfill_quarantine", schema=schema
    )
    op.drop_table("unistatus_backfill_quarantine", schema=schema)
    op.drop_index("ix_backfill_chunks_claim", "unistatus_backfill_chunks", schema=schema)
    op.drop_table("unistatus_backfill_chunks", schema=schema)
    op.drop_table("unistatus_backfill_jobs", schema=schema)
