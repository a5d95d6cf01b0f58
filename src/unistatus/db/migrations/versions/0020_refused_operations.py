"""Operation statistics: a count of the writes refused for their caller's input.

``unistatus_operation_stats.refused``: writes the adapter refused after it began (an
unknown transaction, an invalid transition found under the lock, a caller's transaction
that had already failed). They wrote nothing, so they are neither successes nor errors:
before this revision they were counted as successful operations, and a client retrying
a 404 diluted the error rate, pulled the p95 down and counted towards
``p95_gate_min_operations``. Rows flushed before this revision hold 0.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

TABLE = "unistatus_operation_stats"
COLUMN = "refused"


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    with op.batch_alter_table(TABLE, schema=_schema()) as batch:
        batch.add_column(sa.Column(COLUMN, sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table(TABLE, schema=_schema()) as batch:
        batch.drop_column(COLUMN)
