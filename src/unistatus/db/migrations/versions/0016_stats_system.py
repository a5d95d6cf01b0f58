"""Operation statistics per legacy system: ``unistatus_operation_stats.system``.

Each system has its own mode and its own gates (revision 0013), so the latency and
error rate its gates and alerts read are its own: every flushed row names the legacy
system of the operations it counts (``CASHOUT``, ``ESCROW``, ``EXCHANGE``). NULL: not
known (rows flushed before this revision, and reads that failed before the entity was
found); those count in the figures of every system together only.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLE = "unistatus_operation_stats"
COLUMN = "system"


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    with op.batch_alter_table(TABLE, schema=_schema()) as batch:
        batch.add_column(sa.Column(COLUMN, sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(TABLE, schema=_schema()) as batch:
        batch.drop_column(COLUMN)
