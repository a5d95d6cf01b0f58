"""alert state: one row per alert rule, and values the monitor keeps (p95 baseline).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision = "0004"
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
        "unistatus_alert_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("since", UTC, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("marker", sa.String(128), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("evaluated_at", UTC, nullable=False),
        sa.Column("notified_at", UTC, nullable=True),
        sa.Column("notified_state", sa.String(16), nullable=True),
        sa.Column("response", sa.Text, nullable=True),
        schema=schema,
    )
    op.create_table(
        "unistatus_monitor_values",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        schema=schema,
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_table("unistatus_monitor_values", schema=schema)
    op.drop_table("unistatus_alert_state", schema=schema)
