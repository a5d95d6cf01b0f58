"""Changes the replay to legacy did not apply, kept for the operator (docs/rollback.md).

A change made in UNIFIED_ONLY is replayed to legacy only while the legacy row still
holds the status the change started from (its legacy "before"). A legacy row that moved
on meanwhile (a legacy-only write, typically a payout confirmed as SUCCESS) or stayed
locked for the whole replay is never overwritten: the transaction's changes become one
row here, listed by ``unistatus rollback conflicts``, ``diagnose`` and the dashboards,
and resolved with a reason (``unistatus rollback resolve``). Revision 0009 creates it.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.tables import UTC, metadata

replay_conflicts = sa.Table(
    "unistatus_replay_conflicts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("transaction_id", sa.String(18), nullable=False),
    sa.Column("legacy_system", sa.String(16), nullable=True),
    sa.Column("legacy_id", sa.BigInteger, nullable=True),
    # legacy_changed | legacy_busy | legacy_missing | legacy_values_missing |
    # legacy_insert_refused | legacy_update_refused (migration.replay_conflicts.CAUSES)
    sa.Column("cause", sa.String(32), nullable=False),
    # What the replayed changes started from, what legacy held, what they would write.
    sa.Column("legacy_expected", sa.String(64), nullable=True),
    sa.Column("legacy_actual", sa.String(64), nullable=True),
    sa.Column("replay_status", sa.String(64), nullable=True),
    sa.Column("unified_status", sa.String(32), nullable=True),
    # The pending changes (unistatus_pending_legacy ids) this conflict holds.
    sa.Column("first_change_id", sa.BigInteger, nullable=False),
    sa.Column("last_change_id", sa.BigInteger, nullable=False),
    sa.Column("changes", sa.Integer, nullable=False),
    sa.Column("created_at", UTC, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("resolved_at", UTC, nullable=True),
    # keep_legacy | apply
    sa.Column("resolution", sa.String(16), nullable=True),
    sa.Column("resolved_by", sa.String(128), nullable=True),
    sa.Column("resolution_reason", sa.Text, nullable=True),
)
sa.Index("ix_replay_conflicts_open", replay_conflicts.c.resolved_at)
