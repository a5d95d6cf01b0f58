"""What each running backfill worker is doing: its batch size and its throttle.

``unistatus_backfill_workers``: one row per worker (host:pid), written by the worker
between batches (at most about once a second, and whenever it starts or stops holding
back): the size of its next batch, its last batch's rows and duration, the throttle
decision in force (reason, since when, the reading and its limit), every health
probe's latest reading, and the seconds it held back per reason. ``backfill status``
and ``/metrics`` read it from any process.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TABLE = "unistatus_backfill_workers"


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("worker", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("batch_rows", sa.Integer, nullable=False),
        sa.Column("last_batch_rows", sa.Integer, nullable=True),
        sa.Column("last_batch_ms", sa.Float, nullable=True),
        sa.Column("rows", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("throttle_reason", sa.String(32), nullable=True),
        sa.Column("throttle_since", UTC, nullable=True),
        sa.Column("throttle_reading", sa.Float, nullable=True),
        sa.Column("throttle_limit", sa.Float, nullable=True),
        sa.Column("readings", JSON, nullable=True),
        sa.Column("throttled_seconds", JSON, nullable=True),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=True),
        schema=_schema(),
    )


def downgrade() -> None:
    op.drop_table(TABLE, schema=_schema())
