"""unistatus's own tables (SQLAlchemy Core), plus the reference legacy tables.

The reference legacy tables (`cashouts`, `escrows`, `exchanges`) are what the demo and
the tests use; a real deployment points :class:`unistatus.config.LegacyTableSpec` at its
own tables instead. Alembic migrations in ``db/migrations`` create all of these.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()
legacy_metadata = sa.MetaData()

Money = sa.Numeric(20, 8)
UTC = sa.DateTime(timezone=True)
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _legacy_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        legacy_metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("currency", sa.String(10), nullable=False),
        # NULL is allowed: real legacy data has such rows, and they must be quarantined.
        sa.Column("status", sa.String(64), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        # SQLite: never the id of a deleted row again (its unified row is a record).
        sqlite_autoincrement=True,
    )


cashouts = _legacy_table("cashouts")
escrows = _legacy_table("escrows")
exchanges = _legacy_table("exchanges")
REFERENCE_LEGACY_TABLES = {"CASHOUT": cashouts, "ESCROW": escrows, "EXCHANGE": exchanges}

unified_transactions = sa.Table(
    "unified_transactions",
    metadata,
    # "UTX" + 15 digits. For a legacy row: system digit (1 cashout, 2 escrow, 3 exchange)
    # then the legacy id padded to 14 digits, so backfill can compute it in SQL.
    # Transactions born unified: "UTX9" + 14 random digits.
    sa.Column("id", sa.String(18), primary_key=True),
    sa.Column("transaction_type", sa.String(32), nullable=False),
    sa.Column("legacy_system", sa.String(16), nullable=True),
    sa.Column("legacy_id", sa.BigInteger, nullable=True),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("amount", Money, nullable=False),
    sa.Column("currency", sa.String(10), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("legacy_status", sa.String(64), nullable=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("metadata", Json, nullable=True, key="meta"),
    sa.Column("created_at", UTC, nullable=False),
    sa.Column("updated_at", UTC, nullable=False),
    sa.UniqueConstraint("legacy_system", "legacy_id", name="uq_unified_legacy_ref"),
    sa.CheckConstraint("origin IN ('dual_write','backfill','repair','unified')", name="ck_origin"),
    sa.CheckConstraint("amount >= 0", name="ck_unified_amount"),
)
# No index on the columns a status change writes (status, legacy_status, version,
# updated_at), so that its update can be HOT; fillfactor 90 on PostgreSQL leaves room on
# the page for it (revision 0012: SQLAlchemy's Table has no storage parameters).

status_history = sa.Table(
    "unified_status_history",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("transaction_id", sa.String(18), nullable=True),
    sa.Column("legacy_system", sa.String(16), nullable=True),
    sa.Column("legacy_id", sa.BigInteger, nullable=True),
    sa.Column("from_status", sa.String(32), nullable=True),
    sa.Column("to_status", sa.String(32), nullable=True),
    sa.Column("from_legacy_status", sa.String(64), nullable=True),
    sa.Column("to_legacy_status", sa.String(64), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("triggered_by", sa.String(128), nullable=False),
    sa.Column("metadata", Json, nullable=True, key="meta"),
    sa.Column("operation_id", sa.String(36), nullable=False),
    sa.Column("mode", sa.String(40), nullable=False),
    sa.Column("override", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTC, nullable=False),
)
# One index: a legacy transaction's id is derived from its legacy key (revision 0012).
sa.Index("ix_history_transaction", status_history.c.transaction_id)

migration_control = sa.Table(
    "unistatus_control",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
    sa.Column("updated_at", UTC, nullable=False),
    sa.Column("updated_by", sa.String(128), nullable=False),
)

control_log = sa.Table(
    "unistatus_control_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("old_value", sa.String(256), nullable=True),
    sa.Column("new_value", sa.String(256), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("metadata", Json, nullable=True, key="meta"),
    sa.Column("created_at", UTC, nullable=False),
)

repair_queue = sa.Table(
    "unistatus_repair_queue",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("transaction_id", sa.String(18), nullable=True),
    sa.Column("legacy_system", sa.String(16), nullable=True),
    sa.Column("legacy_id", sa.BigInteger, nullable=True),
    sa.Column("operation_id", sa.String(36), nullable=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("created_at", UTC, nullable=False),
    sa.Column("resolved_at", UTC, nullable=True),
    sa.Column("resolution", sa.Text, nullable=True),
)
sa.Index("ix_repair_unresolved", repair_queue.c.resolved_at)

# Changes made while legacy is frozen (UNIFIED_ONLY), to replay on rollback.
pending_legacy_changes = sa.Table(
    "unistatus_pending_legacy",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("transaction_id", sa.String(18), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # create | status
    sa.Column("legacy_status", sa.String(64), nullable=True),
    sa.Column("operation_id", sa.String(36), nullable=False),
    sa.Column("created_at", UTC, nullable=False),
    sa.Column("replayed_at", UTC, nullable=True),
)
sa.Index("ix_pending_unreplayed", pending_legacy_changes.c.replayed_at)
sa.Index("ix_pending_transaction", pending_legacy_changes.c.transaction_id)
