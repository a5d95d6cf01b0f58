"""HOT writer counts: no index on ``unistatus_capture_writers.last_seen_at``.

Every statement a bypass writer runs while unified is maintained adds to its row of
``unistatus_capture_writers`` (one per writer, target and session) and sets its
``last_seen_at``. With that column indexed, no such update could be HOT (heap-only): each
one added an entry to the primary key and to ``ix_capture_writers_last_seen`` and left
both to bloat, so the next statement's upsert probed a primary key full of dead entries.
Nothing reads the table through that index: ``capture status``, the phase-4 gate and the
alert rule sum the rows per writer (a scan of a table of a few rows per session that
ever bypassed unistatus), and order them in memory.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from alembic import context, op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

TABLE = "unistatus_capture_writers"
# Frozen copy of the index as revision 0011 created it.
INDEX = "ix_capture_writers_last_seen"
COLUMNS = ["last_seen_at"]


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE, schema=_schema())


def downgrade() -> None:
    op.create_index(INDEX, TABLE, COLUMNS, schema=_schema())
