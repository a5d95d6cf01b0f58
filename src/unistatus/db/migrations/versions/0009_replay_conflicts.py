"""Replayed changes kept as conflicts (docs/rollback.md).

``unistatus_replay_conflicts``: a change made in UNIFIED_ONLY that the replay to legacy
did not apply because the legacy row no longer held the status the change started from
(or stayed locked, or is gone). The operator resolves each with a reason.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)
TABLE = "unistatus_replay_conflicts"


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        TABLE,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("transaction_id", sa.String(18), nullable=False),
        sa.Column("legacy_system", sa.String(16), nullable=True),
        sa.Column("legacy_id", sa.BigInteger, nullable=True),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.Column("legacy_expected", sa.String(64), nullable=True),
        sa.Column("legacy_actual", sa.String(64), nullable=True),
        sa.Column("replay_status", sa.String(64), nullable=True),
        sa.Column("unified_status", sa.String(32), nullable=True),
        sa.Column("first_change_id", sa.BigInteger, nullable=False),
        sa.Column("last_change_id", sa.BigInteger, nullable=False),
        sa.Column("changes", sa.Integer, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("resolved_at", UTC, nullable=True),
        sa.Column("resolution", sa.String(16), nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        sa.Column("resolution_reason", sa.Text, nullable=True),
        schema=schema,
    )
    op.create_index("ix_replay_conflicts_open", TABLE, ["resolved_at"], schema=schema)


def downgrade() -> None:
    schema = _schema()
    op.drop_index("ix_replay_conflicts_open", table_name=TABLE, schema=schema)
    op.drop_table(TABLE, schema=schema)
