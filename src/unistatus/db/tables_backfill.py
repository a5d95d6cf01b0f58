"""The backfill's own tables: its jobs, their key-range chunks, and the quarantine.

A *job* is one backfill of one legacy system up to the high-water mark taken when it
was planned. Its *chunks* are the primary-key ranges the batches cover; a chunk turns
``done`` in the same transaction as the ``INSERT ... SELECT`` that copied it, so the
chunk table is the checkpoint, and workers (on any host) claim pending chunks with
``FOR UPDATE SKIP LOCKED``. The *quarantine* keeps unmappable legacy rows aside, with
their raw value and why (and, when the capture triggers set it aside, who wrote it), until
``backfill --retry-quarantine`` can migrate them. Each running *worker* keeps a row of
what it is doing now (revision 0013): its batch size, and whether and why it holds back,
for ``backfill status`` and ``/metrics`` in any process.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.tables import UTC, Json, metadata

backfill_jobs = sa.Table(
    "unistatus_backfill_jobs",
    metadata,
    sa.Column("system", sa.String(16), primary_key=True),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # running | complete
    sa.Column("high_water_mark", sa.BigInteger, nullable=True),  # None: empty table
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("batch_size", sa.Integer, nullable=False),
    sa.Column("started_at", UTC, nullable=False),
    sa.Column("updated_at", UTC, nullable=False),
    sa.Column("finished_at", UTC, nullable=True),
)

backfill_chunks = sa.Table(
    "unistatus_backfill_chunks",
    metadata,
    sa.Column("system", sa.String(16), primary_key=True),
    sa.Column("start_id", sa.BigInteger, primary_key=True),
    sa.Column("end_id", sa.BigInteger, nullable=False),  # inclusive
    sa.Column("rows", sa.Integer, nullable=False),  # legacy rows in range when planned
    # A batch that covered several chunks records its counts on its first chunk, zero on
    # the others (they commit together, so the sums are exact at every moment).
    sa.Column("state", sa.String(16), nullable=False),  # pending | done
    sa.Column("inserted", sa.Integer, nullable=False, server_default="0"),
    sa.Column("already_present", sa.Integer, nullable=False, server_default="0"),
    sa.Column("quarantined", sa.Integer, nullable=False, server_default="0"),
    sa.Column("worker", sa.String(64), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("done_at", UTC, nullable=True),
)
sa.Index("ix_backfill_chunks_claim", backfill_chunks.c.state, backfill_chunks.c.system)

backfill_quarantine = sa.Table(
    "unistatus_backfill_quarantine",
    metadata,
    sa.Column("system", sa.String(16), primary_key=True),
    sa.Column("legacy_id", sa.BigInteger, primary_key=True),
    sa.Column("raw_status", sa.String(64), nullable=True),
    # null_status | status_not_text | wrong_case | unknown_status | id_beyond_utx_range |
    # null_user_id | user_id_not_integer |
    # null_amount | null_currency | currency_not_text | currency_too_long |
    # amount_not_number | amount_nan | amount_out_of_range | amount_too_precise |
    # negative_amount
    # (backfill.statements)
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("first_seen_at", UTC, nullable=False),
    sa.Column("last_seen_at", UTC, nullable=False),
    sa.Column("resolved_at", UTC, nullable=True),
    sa.Column("resolution", sa.String(32), nullable=True),  # migrated | legacy_row_gone
    # Who wrote the value (revision 0011): a writer that bypassed the adapter, named by
    # the capture triggers; NULL when the backfill found it.
    sa.Column("writer", sa.String(128), nullable=True),
)
sa.Index("ix_backfill_quarantine_unresolved", backfill_quarantine.c.resolved_at)

backfill_workers = sa.Table(
    "unistatus_backfill_workers",
    metadata,
    sa.Column("worker", sa.String(64), primary_key=True),  # host:pid[.N]
    sa.Column("state", sa.String(16), nullable=False),  # running|throttled|paused|finished
    sa.Column("batch_rows", sa.Integer, nullable=False),  # the size of its next batch
    sa.Column("last_batch_rows", sa.Integer, nullable=True),
    sa.Column("last_batch_ms", sa.Float, nullable=True),
    sa.Column("rows", sa.BigInteger, nullable=False, server_default="0"),  # copied by it
    # The throttle decision in force (NULL reason: not held back), since when, and the
    # reading against its limit; every probe's latest reading; seconds held per reason.
    sa.Column("throttle_reason", sa.String(32), nullable=True),
    sa.Column("throttle_since", UTC, nullable=True),
    sa.Column("throttle_reading", sa.Float, nullable=True),
    sa.Column("throttle_limit", sa.Float, nullable=True),
    sa.Column("readings", Json, nullable=True),
    sa.Column("throttled_seconds", Json, nullable=True),
    sa.Column("started_at", UTC, nullable=False),
    sa.Column("updated_at", UTC, nullable=False),  # its heartbeat
    sa.Column("finished_at", UTC, nullable=True),
)
