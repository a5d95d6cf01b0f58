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
from unistatus.migration.rollback import emergency_rollback
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
    try:
        yield cashouts_as(db, {"table": name})
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO cashouts")


def cashouts_as(db: Any, spec: dict[str, str]) -> Settings:
    """``db``'s settings with the cashout table described by ``spec`` (the other
    systems' tables as they are)."""
    return load_settings(
        database_url=db.url, schema=db.settings.schema, legacy_tables={"CASHOUT": spec}
    )


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


@contextmanager
def cashouts_of_their_own(db: Any) -> Iterator[Settings]:
    """A cashout table of the application's naming: a name and columns that need
    quoting, none of them unistatus's (PostgreSQL: in a schema of its own). Dropped
    afterwards."""
    pg = db.backend == "postgres"
    table = 'shop."Cash Outs"' if pg else '"Cash Outs"'
    key = '"ID" BIGSERIAL PRIMARY KEY' if pg else '"ID" INTEGER PRIMARY KEY AUTOINCREMENT'
    with db.engine.begin() as conn:
        if pg:
            conn.exec_driver_sql("CREATE SCHEMA shop")
        conn.exec_driver_sql(
            f'CREATE TABLE {table} ({key}, "State" VARCHAR(64) NOT NULL, '
            '"Owner" BIGINT NOT NULL, "Sum" NUMERIC(20, 8) NOT NULL, "Cur" VARCHAR(10) NOT '
            'NULL, "Made" TIMESTAMP NOT NULL, "Touched" TIMESTAMP NOT NULL)'
        )
    spec = {
        "table": "Cash Outs",
        **({"schema": "shop"} if pg else {}),
        "id": "ID",
        "status": "State",
        "user_id": "Owner",
        "amount": "Sum",
        "currency": "Cur",
        "created_at": "Made",
        "updated_at": "Touched",
    }
    try:
        yield cashouts_as(db, spec)
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA shop CASCADE" if pg else f"DROP TABLE {table}")


def test_a_legacy_table_with_columns_of_its_own_naming(db: Any) -> None:
    """Every column named otherwise (and needing quotes): the backfill, the check, the
    adapter's one-statement create and its update, and a rollback's replay of a create
    made in UNIFIED_ONLY all find them by the configured names."""
    with cashouts_of_their_own(db) as settings:
        seed_legacy(db.engine, settings, 60, seed=1, systems=["CASHOUT"])
        assert run_backfill(db.engine, settings, workers=1).as_dict()["inserted"] == 60
        set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
        adapter = DualWriteAdapter(db.engine, settings=settings)
        try:
            created = adapter.create_transaction("WALLET_CASHOUT", 7, "12.50", "USD")
            assert created.overall_success, created.as_dict()
            entity = f"cashout:{created.legacy_entity_id}"
            changed = adapter.update_status(entity, "OTP_PENDING", "t", "t")
            assert changed.overall_success and changed.changed, changed.as_dict()
            set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="t", actor="t")
            adapter.modes.refresh()
            born = adapter.create_transaction("WALLET_CASHOUT", 8, "3", "USD")
            assert born.overall_success, born.as_dict()
        finally:
            adapter.close()
        emergency_rollback(db.engine, settings, actor="t", reason="t")
        full = run_check(db.engine, settings, store=False)
        assert (full.total, full.consistent) == (62, 62)
