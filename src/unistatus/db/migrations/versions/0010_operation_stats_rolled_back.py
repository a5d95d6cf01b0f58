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
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLE = "unistatus_operation_stats"
COLUMN = "rolled_back"


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.add_column(sa.Column(COLUMN, sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column(COLUMN)
