"""Finer latency buckets for the operation statistics: ``f00`` .. ``f48``.

The buckets of revision 0004 step from 20 to 50 ms and from 50 to 100 ms: a p95 of 43
and of 52 ms read the same there, so the backfill's throttle (a p95 20% above the one
without the backfill) and a gate judging a p95 against a baseline cannot see a
slowdown of live writes where they are. These columns hold the same operations in
steps of 10-20% (bounds in ``unistatus.db.tables_ops.FINE_BUCKETS_MS``, a superset of
the old ones, which every row still carries). Rows flushed before this revision have
only the old buckets; a window holding any of them is read from the old buckets.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

TABLE = "unistatus_operation_stats"
# Frozen copy of unistatus.db.tables_ops.FINE_COLUMNS at this revision (49 buckets).
COLUMNS = [f"f{i:02d}" for i in range(49)]


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    with op.batch_alter_table(TABLE, schema=_schema()) as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table(TABLE, schema=_schema()) as batch:
        for name in COLUMNS:
            batch.drop_column(name)
