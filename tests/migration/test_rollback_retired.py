"""Rolling back out of phase 4 after the legacy status columns were retired."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.cli import app
from unistatus.db.control import get_mode, set_mode
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.consistency import compare
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.errors import ModeError
from unistatus.migration import phases, rollback
from unistatus.migration.archive import export_archive, record_verified, verify_archive
from unistatus.migration.retire import legacy_columns_dropped, retire_legacy_columns, undo_cleanup


def archived(db: Database, tmp_path: Path) -> None:
    """A verified archive of the frozen legacy tables (the retirement's gate)."""
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    record_verified(db.engine, verify_archive(db.engine, out), actor="test")


def test_rollback_from_4_restores_columns_then_replays(db: Database, tmp_path: Path) -> None:
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    phases.advance(db.engine, db.settings, actor="t")
    adapter.modes.refresh()
    old = adapter.create_transaction("ESCROW", 4, "20", "EUR")
    assert old.entity_id
    assert adapter.update_status(old.entity_id, "PENDING_SELLER", "s", "t").overall_success
    for _ in range(3):
        phases.advance(db.engine, db.settings, actor="t", force=True, reason="test setup")
    archived(db, tmp_path)
    try:
        retire_legacy_columns(db.engine, db.settings)
        assert legacy_columns_dropped(db.engine, db.settings)
        adapter = DualWriteAdapter(db.engine, settings=db.settings)
        born = adapter.create_transaction("EXCHANGE", 9, "1.5", "USDT")
        assert born.overall_success and born.entity_id
        assert adapter.update_status(born.entity_id, "AWAITING_PAYMENT", "w", "t").overall_success
        assert adapter.update_status(old.entity_id, "PAYMENT_CONFIRMED", "w", "t").overall_success

        change = rollback.rollback_current_phase(
            db.engine, db.settings, actor="ops", reason="retire bug"
        )
        assert change.details["replay"]["undo_cleanup"]["undone"] is True
        assert not legacy_columns_dropped(db.engine, db.settings)
        assert get_mode(db.engine) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
        tables = resolve_legacy_tables(db.engine, db.settings)
        with db.engine.connect() as conn:
            unified = [dict(r) for r in conn.execute(sa.select(U)).mappings()]
            for u in unified:
                lt = tables[LegacySystemType(u["legacy_system"])]
                assert lt.status is not None and u["legacy_id"] is not None
                row = (
                    conn.execute(
                        sa.select(
                            lt.id.label("id"),
                            lt.status.label("status"),
                            lt.user_id.label("user_id"),
                            lt.amount.label("amount"),
                            lt.currency.label("currency"),
                        ).where(lt.id == u["legacy_id"])
                    )
                    .mappings()
                    .first()
                )
                assert not compare(LegacySystemType(u["legacy_system"]), row, u)
        statuses = {u["id"]: (u["status"], u["legacy_status"]) for u in unified}
        assert statuses[born.entity_id] == ("AWAITING_PAYMENT", "AWAITING_DEPOSIT")
        assert statuses[old.entity_id] == ("PAYMENT_CONFIRMED", "PAYMENT_CONFIRMED")
        # The adapter started while the columns were gone reads legacy again (before any
        # write of its own) and writes it again, no restart.
        adapter.modes.refresh()
        assert adapter.check_consistency(born.entity_id)["consistent"]
        status, meta = adapter.get_transaction_status(born.entity_id)
        assert status is not None and status.value == "AWAITING_PAYMENT"
        assert meta["source"] == "legacy"
        moved = adapter.update_status(old.entity_id, "FUNDS_HELD", "seller accepted", "t")
        assert moved.overall_success, moved.error
        assert moved.legacy_status == "ACTIVE"
        assert adapter.check_consistency(old.entity_id)["consistent"]
    finally:
        undo_cleanup(db.engine, db.settings)


def test_rollback_of_one_system_from_4_after_retirement(db: Database, tmp_path: Path) -> None:
    """The columns are restored for every table (the retirement was of every system),
    only escrows' changes are replayed; exchanges stay frozen in phase 4, their writes
    still recorded, and replayed by their own rollback later: nothing lost."""
    from unistatus.migration.replay import pending_count

    E, X = LegacySystemType.ESCROW, LegacySystemType.EXCHANGE
    for _ in range(4):
        phases.advance(db.engine, db.settings, actor="t", force=True, reason="test setup")
    archived(db, tmp_path)
    try:
        retire_legacy_columns(db.engine, db.settings)
        adapter = DualWriteAdapter(db.engine, settings=db.settings)
        escrow = adapter.create_transaction("ESCROW", 4, "20", "EUR")
        exchange = adapter.create_transaction("EXCHANGE", 9, "1.5", "USDT")
        assert escrow.entity_id and exchange.entity_id
        assert pending_count(db.engine, E) == 1 and pending_count(db.engine, X) == 1

        change = rollback.rollback_current_phase(
            db.engine, db.settings, actor="ops", reason="escrow bug", system="escrow"
        )
        assert change.details["replay"]["undo_cleanup"]["undone"] is True
        assert change.details["replay"]["replayed"] == 1
        assert not legacy_columns_dropped(db.engine, db.settings)
        assert pending_count(db.engine, E) == 0 and pending_count(db.engine, X) == 1
        assert get_mode(db.engine, E) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
        assert get_mode(db.engine, X) is DualWriteMode.UNIFIED_ONLY
        adapter.modes.refresh(X)
        moved = adapter.update_status(exchange.entity_id, "AWAITING_PAYMENT", "w", "t")
        assert moved.overall_success and moved.mode is DualWriteMode.UNIFIED_ONLY
        assert pending_count(db.engine, X) == 2

        back = rollback.rollback_current_phase(
            db.engine, db.settings, actor="ops", reason="exchange too", system=X
        )
        assert back.details["replay"]["replayed"] == 2 and pending_count(db.engine) == 0
        from unistatus.migration.check import run_check

        report = run_check(db.engine, db.settings, store=False)
        assert report.total == 2 and report.consistent == 2, report.as_dict()
        fresh = DualWriteAdapter(db.engine, settings=db.settings)
        for utx in (escrow.entity_id, exchange.entity_id):
            assert fresh.check_consistency(utx)["consistent"], str(fresh.check_consistency(utx))
    finally:
        undo_cleanup(db.engine, db.settings)


def test_mode_set_refuses_a_mode_that_writes_legacy_while_its_columns_are_retired(
    db: Database, tmp_path: Path
) -> None:
    """Nothing is pending, so leaving UNIFIED_ONLY skips no replay; but the legacy status
    columns are gone, and in any mode that writes legacy every write would fail. The
    switch is refused, even forced (a rollback restores the columns first)."""
    for _ in range(4):
        phases.advance(db.engine, db.settings, actor="t", force=True, reason="test setup")
    archived(db, tmp_path)
    try:
        retire_legacy_columns(db.engine, db.settings)
        for mode in (M.DUAL_WRITE_UNIFIED_PRIMARY, M.DUAL_WRITE_LEGACY_PRIMARY, M.LEGACY_ONLY):
            for system in (None, LegacySystemType.ESCROW):
                with pytest.raises(ModeError, match="retire legacy-columns --undo"):
                    set_mode(
                        db.engine,
                        mode,
                        system=system,
                        reason="by hand",
                        force=True,
                        settings=db.settings,
                    )
        assert {get_mode(db.engine, s) for s in LegacySystemType} == {M.UNIFIED_ONLY}
        done = CliRunner().invoke(
            app, ["--database-url", db.url, "mode", "set", "LEGACY_ONLY", "--reason", "x"]
        )
        assert done.exit_code == 2, done.output
        assert "retire legacy-columns --undo" in done.output
        # Writes go on as before.
        adapter = DualWriteAdapter(db.engine, settings=db.settings)
        born = adapter.create_transaction("ESCROW", 4, "20", "EUR")
        assert born.overall_success and born.mode is M.UNIFIED_ONLY
        assert legacy_columns_dropped(db.engine, db.settings)
    finally:
        undo_cleanup(db.engine, db.settings)
