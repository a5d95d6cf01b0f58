"""Operation statistics: a count of the operations the caller rolled back.

``unistatus_operation_stats.rolled_back``: writes made in the caller's transaction
(``connection=``) that the caller then rolled back. They are neither successes nor
errors, so an application's ordinary rollbacks never raise the error rate the gates and
alerts read. Rows flushed before this revision hold 0.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLE = "unistatus_operation_stats"
COLUMN = "rolled_back"


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    schema = _schema()
    with op.batch_alter_table(TABLE, schema=schema) as batch:
        batch.add_column(sa.Column(COLUMN, sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    schema = _schema()
    with op.batch_alter_table(TABLE, schema=schema) as batch:
        batch.drop_column(COLUMN)
