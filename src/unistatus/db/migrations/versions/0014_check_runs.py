"""check runs: where each check run is per system (resume), and whether a report is complete.

``unistatus_check_runs`` holds, per run and legacy system, the last key checked and the
counts so far, committed range by range (``check --resume``), and the watermark of
continuous verification. ``unistatus_check_reports`` gains ``complete`` (a run stopped by
``--max-duration`` is stored, but is no full check) and ``run``; existing reports were
complete runs.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
REPORTS = "unistatus_check_reports"
RUNS = "unistatus_check_runs"


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def upgrade() -> None:
    schema = _schema()
    with op.batch_alter_table(REPORTS, schema=schema) as batch:
        batch.add_column(
            sa.Column("complete", sa.Boolean, nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("run", sa.String(40), nullable=True))
    op.create_table(
        RUNS,
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("run", sa.String(40), nullable=False),
        sa.Column("system", sa.String(16), nullable=False),
        sa.Column("options", JSON, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=True),
        sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("ranges", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("examples", JSON, nullable=False),
        sa.Column("out_bytes", sa.BigInteger, nullable=True),
        sa.Column("watermark", UTC, nullable=True),
        sa.Column("pass_started_at", UTC, nullable=True),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=True),
        sa.UniqueConstraint("run", "system", name="uq_check_runs_run_system"),
        schema=schema,
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_table(RUNS, schema=schema)
    with op.batch_alter_table(REPORTS, schema=schema) as batch:
        batch.drop_column("run")
        batch.drop_column("complete")
