"""Operation statistics: the failed operations counted by what failed them.

``unistatus_operation_stats.errors_connection_limit``, ``errors_outcome_unknown``,
``errors_queue_timeout`` and ``errors_interrupted``: of ``errors``, those an operation's
event labelled so (``OperationEvent.error_kind``: a role's CONNECTION LIMIT or the
server's max_connections, a write that may have committed, the write queue's timeout, an
interruption). The rest of ``errors`` failed for the database otherwise. Before this
revision the kind reached the event only, and ``/metrics`` could not tell a full
database from a failing one. Rows flushed before it hold 0 in each.

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

TABLE = "unistatus_operation_stats"
# Frozen: the columns as this revision adds them (unistatus.db.tables_ops names them too).
COLUMNS = (
    "errors_connection_limit",
    "errors_outcome_unknown",
    "errors_queue_timeout",
    "errors_interrupted",
)


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
        for name in reversed(COLUMNS):
            batch.drop_column(name)
