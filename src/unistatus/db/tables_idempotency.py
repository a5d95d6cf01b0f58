"""Idempotency keys of creates: one row per key, written in the create's transaction.

A create called with ``idempotency_key`` stores the key with a digest of its arguments
and what it created (unified id, legacy system and id: whichever the mode wrote), in the
same transaction as the rows themselves. The primary key makes a second create with the
same key fail and roll back, whether it comes later or concurrently; the adapter then
returns the stored result instead (:mod:`unistatus.adapter.keys`).
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.tables import UTC, metadata

idempotency_keys = sa.Table(
    "unistatus_idempotency_keys",
    metadata,
    sa.Column("key", sa.String(255), nullable=False),
    # SHA-256 (hex) of the create's arguments: the same key with others is refused.
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("operation_id", sa.String(36), nullable=False),
    # What the first call returned (NULL where the mode wrote no such thing).
    sa.Column("transaction_id", sa.String(18), nullable=True),
    sa.Column("legacy_system", sa.String(16), nullable=True),
    sa.Column("legacy_id", sa.BigInteger, nullable=True),
    sa.Column("mode", sa.String(40), nullable=False),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("legacy_status", sa.String(64), nullable=True),
    sa.Column("created_at", UTC, nullable=False),
    sa.PrimaryKeyConstraint("key", name="pk_unistatus_idempotency_keys"),
)
sa.Index("ix_idempotency_keys_created_at", idempotency_keys.c.created_at)
