"""Tables of the consistency check: every ``unistatus check`` run is stored here.

Phase gates, alerts and the dashboard read the latest report of a scope instead of
re-running a full diff; the migration ``0003_check_reports`` creates the table.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.tables import UTC, Json, metadata

check_reports = sa.Table(
    "unistatus_check_reports",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    # "all" for a full check; else the systems checked and/or "since=<iso time>".
    sa.Column("scope", sa.String(200), nullable=False),
    sa.Column("systems", Json, nullable=False),
    sa.Column("since", UTC, nullable=True),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("consistent", sa.BigInteger, nullable=False),
    # A ratio for display and thresholds; the exact counts above stay authoritative.
    sa.Column("consistency_rate", sa.Float, nullable=False),
    sa.Column("inconsistencies", Json, nullable=False),
    sa.Column("per_system", Json, nullable=False),
    sa.Column("examples", Json, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("started_at", UTC, nullable=False),
    sa.Column("created_at", UTC, nullable=False),
)
sa.Index("ix_check_reports_scope_created", check_reports.c.scope, check_reports.c.created_at)
