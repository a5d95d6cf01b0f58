"""Alert state: one row per alert rule, so a firing alert notifies once, not every time.

Every process that evaluates alerts (``unistatus monitor``, ``unistatus serve``) shares
these rows; a state change is a compare-and-set UPDATE, so when two evaluators see the
same change only one of them notifies and runs the automated response.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.tables import UTC, metadata

alert_state = sa.Table(
    "unistatus_alert_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("level", sa.String(16), nullable=False),  # critical | warning | info
    sa.Column("state", sa.String(16), nullable=False),  # firing | resolved | unknown
    sa.Column("since", UTC, nullable=False),  # when the state last changed
    sa.Column("value", sa.Float, nullable=True),  # last measured value (NULL: unknown)
    sa.Column("threshold", sa.Float, nullable=True),
    # Info alerts are events: the marker is the last event seen (phase, report id, ...).
    sa.Column("marker", sa.String(128), nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("evaluated_at", UTC, nullable=False),
    sa.Column("notified_at", UTC, nullable=True),
    sa.Column("notified_state", sa.String(16), nullable=True),
    # The automated response taken for the current firing episode (NULL: none yet).
    sa.Column("response", sa.Text, nullable=True),
)

# Values the monitor keeps between evaluations, e.g. the p95 baseline measured while
# legacy was still primary (the latency rollback compares against it).
monitor_values = sa.Table(
    "unistatus_monitor_values",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("updated_at", UTC, nullable=False),
)
