"""Tables of the consistency check: every ``unistatus check`` run is stored here.

Phase gates, alerts and the dashboard read the latest report of a scope instead of
re-running a full diff; the migration ``0003_check_reports`` creates the table.
``unistatus_check_runs`` (``0013_check_runs``) holds where each run is, per system: the
key it has checked up to and its counts so far (committed range by range, so ``check
--resume`` goes on from there), and the watermark of continuous verification.
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
    # False when the run stopped before covering every key range (--max-duration, or
    # a bounded round of continuous verification): never a full check for a gate.
    sa.Column("complete", sa.Boolean, nullable=False, server_default=sa.true()),
    # The run whose positions are in unistatus_check_runs (None: reports before 0013).
    sa.Column("run", sa.String(40), nullable=True),
)
sa.Index("ix_check_reports_scope_created", check_reports.c.scope, check_reports.c.created_at)

check_runs = sa.Table(
    "unistatus_check_runs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    # "c-<hex>" for a `unistatus check` run; "continuous" for continuous verification.
    sa.Column("run", sa.String(40), nullable=False),
    sa.Column("system", sa.String(16), nullable=False),
    # The run's options (scope, since, chunk, examples, out), so --resume needs none.
    sa.Column("options", Json, nullable=False),
    # The last legacy key checked: the next range starts above it (NULL: from the start).
    sa.Column("position", sa.BigInteger, nullable=True),
    sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("ranges", sa.BigInteger, nullable=False, server_default="0"),
    # Counts so far ({"total", "ok", <kind>: n}), committed with the position.
    sa.Column("counts", Json, nullable=False),
    sa.Column("examples", Json, nullable=False),
    # Size of the --out file once this range's lines were written (truncated to it on resume).
    sa.Column("out_bytes", sa.BigInteger, nullable=True),
    # Continuous verification: every change stamped before this has been verified.
    sa.Column("watermark", UTC, nullable=True),
    # Continuous verification: when the current pass began (the next watermark).
    sa.Column("pass_started_at", UTC, nullable=True),
    sa.Column("started_at", UTC, nullable=False),
    sa.Column("updated_at", UTC, nullable=False),
    sa.Column("finished_at", UTC, nullable=True),
    sa.UniqueConstraint("run", "system", name="uq_check_runs_run_system"),
)
