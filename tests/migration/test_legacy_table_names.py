"""A legacy table is the application's, whatever it is called: named like one of the
common table expressions of unistatus's statements, it is still read and written as
itself (a CTE's name hides a table of that name referred to unqualified)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from support.check_data import T1, damage, populate
from unistatus.adapter.core import DualWriteAdapter
from unistatus.backfill import run_backfill
from unistatus.clock import utcnow
from unistatus.config import Settings, load_settings
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode, UnifiedTransactionStatus
from unistatus.migration.check import run_check
from unistatus.sim.seed import seed_legacy

# Names our statements' CTEs had before they took unistatus's prefix: the backfill's
# batch (claim, src, ins), its plan (bounds), the adapter's writes (locked, legacy_write,
# unified_write, history_write), the check's since scope (changed).
NAMES = ["changed", "claim", "src", "ins", "bounds", "locked", "legacy_write", "history_write"]


@contextmanager
def cashouts_named(db: Any, name: str) -> Iterator[Settings]:
    """The cashout table renamed ``name`` (back afterwards: the database is shared), and
    settings that say so."""
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE cashouts RENAME TO {name}")
    legacy = {
        "CASHOUT": {"table": name},
        "ESCROW": {"table": "escrows"},
        "EXCHANGE": {"table": "exchanges"},
    }
    try:
        yield load_settings(database_url=db.url, schema=db.settings.schema, legacy_tables=legacy)
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO cashouts")


@pytest.mark.parametrize("name", NAMES)
def test_backfill_adapter_and_check_read_the_legacy_table_by_its_name(db: Any, name: str) -> None:
    with cashouts_named(db, name) as settings:
        seed_legacy(db.engine, settings, 300, seed=1)
        report = run_backfill(db.engine, settings, batch_size=40, workers=1)
        assert report.as_dict()["inserted"] == 300
        set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
        adapter = DualWriteAdapter(db.engine, settings=settings)
        try:
            created = adapter.create_transaction(
                "WALLET_CASHOUT", 7, "12.50", "USDT", status="PROCESSING"
            )
            assert created.overall_success, created.as_dict()
            entity = f"cashout:{created.legacy_entity_id}"
            changed = adapter.update_status(entity, "AWAITING_RESPONSE", "t", "t")
            assert changed.overall_success and changed.changed, changed.as_dict()
            status, _ = adapter.get_transaction_status(entity)
            assert status is UnifiedTransactionStatus.AWAITING_RESPONSE
        finally:
            adapter.close()
        full = run_check(db.engine, settings, store=False)
        assert full.total == 301 and full.consistent == 301
        since = run_check(db.engine, settings, since=utcnow() - timedelta(hours=1), store=False)
        assert since.total >= 1 and since.consistent == since.total


def test_a_since_scope_reads_a_legacy_table_named_changed(db: Any) -> None:
    """The pairs a ``since`` scope keeps, inconsistent ones included, are the same with
    the cashout table called ``changed``."""
    populate(db.engine, db.settings, 60)
    damage(db.engine, db.settings, 60)
    since = T1 - timedelta(days=1)

    def counts(settings: Settings) -> dict[str, Any]:
        report = run_check(db.engine, settings, since=since, store=False, chunk=7)
        return {
            system: (figures["total"], figures["consistent"], figures["inconsistencies"])
            for system, figures in report.per_system.items()
        }

    before = counts(db.settings)
    assert before["CASHOUT"][0] > 0
    with cashouts_named(db, "changed") as settings:
        assert counts(settings) == before
