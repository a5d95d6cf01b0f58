"""HOT unified updates: no index on the columns a status change writes, and room on the page.

A status change writes ``unified_transactions.status``, ``legacy_status``, ``version``
and ``updated_at``. With ``status`` and ``updated_at`` indexed, no such update could be
HOT (heap-only): each one added an entry to all four indexes and logged it. No query of
unistatus needs either index (``check --since`` scans its key range whatever the index;
see BENCHMARKS.md, "Dual-write overhead: variants"), so both are dropped, and the table's
fillfactor is set to 90 so that the page of a newly written row has room for its next
version (PostgreSQL only; it applies to pages filled from now on: existing rows get
HOT updates once pruning frees room on their page, or at once after a VACUUM FULL or
pg_repack in a quiet window, which this revision does not run). A BRIN index on
``updated_at`` would not do: PostgreSQL 15 still refuses HOT for BRIN-indexed columns.

``unified_status_history``'s index on (legacy_system, legacy_id) goes too: every history
row carries its transaction id, which for a legacy transaction is derived from the
legacy key (``ix_history_transaction`` serves both look-ups), and nothing reads by it.

A deployment that wants a status index of its own for its queries can add one; its
status changes then stop being HOT.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import context, op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UNIFIED = "unified_transactions"
HISTORY = "unified_status_history"
FILLFACTOR = 90
# Frozen copies of the indexes as revision 0001 created them.
DROPPED = (
    ("ix_unified_updated_at", UNIFIED, ["updated_at"]),
    ("ix_unified_status", UNIFIED, ["status"]),
    ("ix_history_legacy", HISTORY, ["legacy_system", "legacy_id"]),
)


def _schema() -> str | None:
    """Where unistatus's own tables are: the ``schema`` setting (None: unqualified)."""
    schema: str | None = context.config.attributes.get("schema")
    return schema


def _unified() -> str:
    schema = _schema()
    return UNIFIED if schema is None else f"{schema}.{UNIFIED}"


def upgrade() -> None:
    for name, table, _ in DROPPED:
        op.drop_index(name, table_name=table, schema=_schema())
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {_unified()} SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {_unified()} RESET (fillfactor)")
    for name, table, columns in DROPPED:
        op.create_index(name, table, columns, schema=_schema())
