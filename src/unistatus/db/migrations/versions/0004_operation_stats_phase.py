"""Operation statistics (one row per flush interval per process); the phase uses control.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)
# Frozen copy of unistatus.db.tables_ops.BUCKET_COLUMNS at this revision (17 buckets).
BUCKETS = [f"b{i:02d}" for i in range(17)]


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "unistatus_operation_stats",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("process_id", sa.String(128), nullable=False),
        sa.Column("interval_start", UTC, nullable=False),
        sa.Column("interval_end", UTC, nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(40), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("shadow_mismatches", sa.BigInteger, nullable=False),
        sa.Column("latency_sum_ms", sa.Float, nullable=False),
        sa.Column("latency_max_ms", sa.Float, nullable=False),
        *(sa.Column(b, sa.BigInteger, nullable=False, server_default="0") for b in BUCKETS),
        schema=schema,
    )
    op.create_index(
        "ix_operation_stats_end", "unistatus_operation_stats", ["interval_end"], schema=schema
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_index("ix_operation_stats_end", table_name="unistatus_operation_stats", schema=schema)
    op.drop_table("unistatus_operation_stats", schema=schema)
