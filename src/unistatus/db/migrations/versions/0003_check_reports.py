"""check reports: one row per `unistatus check` run (scope, counts, rate, examples).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "unistatus_check_reports",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("systems", JSON, nullable=False),
        sa.Column("since", UTC, nullable=True),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("consistent", sa.BigInteger, nullable=False),
        sa.Column("consistency_rate", sa.Float, nullable=False),
        sa.Column("inconsistencies", JSON, nullable=False),
        sa.Column("per_system", JSON, nullable=False),
        sa.Column("examples", JSON, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        schema=schema,
    )
    op.create_index(
        "ix_check_reports_scope_created",
        "unistatus_check_reports",
        ["scope", "created_at"],
        schema=schema,
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_index(
        "ix_check_reports_scope_created", table_name="unistatus_check_reports", schema=schema
    )
    op.drop_table("unistatus_check_reports", schema=schema)
