"""Tables of the capture of writes that bypass the adapter (``unistatus capture``).

- :data:`capture_writers`: who wrote the legacy tables (or ``unified_transactions``)
  without going through unistatus, with counts. One row per writer, target and *shard*:
  the writing session's backend pid on PostgreSQL (0 on SQLite), so concurrent
  sessions never update the same row (no lock queue, no deadlock between writers);
  readers sum the shards (:func:`unistatus.migration.capture_writers.writers_seen`), and the
  shards of sessions gone quiet are folded into shard 0 now and then
  (:func:`unistatus.migration.capture_writers.fold_writers`). The target
  ``system`` is a legacy system, or ``UNIFIED`` for direct writes to
  ``unified_transactions``.
- :data:`capture_changed`: the entities a legacy write changed while the mode was
  LEGACY_ONLY (unified not maintained), brought in step when a mode that maintains
  unified is entered.
- :data:`writer_marks`: on SQLite, the mark a unistatus write transaction holds while it
  writes (:mod:`unistatus.db.writer_mark`); PostgreSQL keeps it in a setting instead.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.tables import UTC, metadata

capture_writers = sa.Table(
    "unistatus_capture_writers",
    metadata,
    sa.Column("writer", sa.String(128), primary_key=True),
    sa.Column("system", sa.String(16), primary_key=True),
    sa.Column("shard", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("writes", sa.BigInteger, nullable=False),
    sa.Column("flagged", sa.BigInteger, nullable=False),
    sa.Column("unmappable", sa.BigInteger, nullable=False),
    sa.Column("first_seen_at", UTC, nullable=False),
    sa.Column("last_seen_at", UTC, nullable=False),
    sa.Column("last_mode", sa.String(40), nullable=False),
    sa.Column("client_addr", sa.String(64), nullable=True),
)
# No index on last_seen_at, which every captured statement sets: its update stays HOT
# (revision 0018); readers sum a few rows per writer and order them in memory.

capture_changed = sa.Table(
    "unistatus_capture_changed",
    metadata,
    sa.Column("system", sa.String(16), primary_key=True),
    sa.Column("legacy_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("changed_at", UTC, nullable=False),
)

writer_marks = sa.Table(
    "unistatus_writer_marks",
    metadata,
    sa.Column("writer", sa.String(32), primary_key=True),
)
