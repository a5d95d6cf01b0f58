"""A nightly job that expires cashouts nobody approved in time.

``expire_stale_cashouts_sql`` is how the job was written before unistatus: one raw
``UPDATE`` of the legacy table, behind the adapter's back. With ``unistatus capture
enable`` the database's triggers bring the unified rows in step in the same statement
and name the writer (``capture status``), so the job can keep running while the service
is converted. Before legacy is frozen (phase 4) every code path must go through the
adapter: ``expire_stale_cashouts`` is the converted job.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from payments_service.models import Cashout, now
from unistatus import DualWriteAdapter, UnifiedTransactionStatus
from unistatus.db.tables import unified_transactions as U


def expire_stale_cashouts_sql(engine: sa.Engine, older_than: datetime) -> int:
    """The legacy job: a set-based UPDATE of the legacy status column."""
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(Cashout)
            .where(Cashout.status == "PENDING", Cashout.created_at < older_than)
            .values(status="EXPIRED", updated_at=now())
        )
        return result.rowcount


def expire_stale_cashouts(
    engine: sa.Engine, adapter: DualWriteAdapter, older_than: datetime
) -> int:
    """The converted job: each cashout through the adapter, in its own transaction.

    Candidates come from both sides (the legacy table is current in the legacy-primary
    modes, the unified table from unified primary on, and a cashout created in
    UNIFIED_ONLY has no legacy row); the adapter's read, from the authoritative side,
    decides, inside the transaction that writes.
    """
    with engine.connect() as conn:
        refs = [
            f"cashout:{legacy_id}"
            for legacy_id in conn.scalars(
                sa.select(Cashout.id).where(
                    Cashout.status == "PENDING", Cashout.created_at < older_than
                )
            )
        ]
    # unistatus's tables through the adapter's engine: it names them in the schema the
    # settings give (`schema = "unistatus"`), the application's engine does not.
    with adapter.engine.connect() as conn:
        refs += list(
            conn.scalars(
                sa.select(U.c.id).where(
                    U.c.transaction_type == "WALLET_CASHOUT",
                    U.c.status == "PENDING",
                    U.c.created_at < older_than,
                )
            )
        )
    expired = 0
    for ref in refs:  # one entity may be listed twice: the second finds it expired
        with engine.begin() as conn:
            status, _ = adapter.get_transaction_status(ref, connection=conn)
            if status is not UnifiedTransactionStatus.PENDING:
                continue
            adapter.update_status(
                ref,
                "EXPIRED",
                "not approved in time",
                "expiry-job",
                connection=conn,
            )
            expired += 1
    return expired
