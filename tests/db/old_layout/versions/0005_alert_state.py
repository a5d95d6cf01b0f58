"""alert state: one row per alert rule, and values the monitor keeps (p95 baseline).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
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
    )
    op.create_table(
        "unistatus_monitor_values",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("unistatus_monitor_values")
    op.drop_table("unistatus_alert_state")
