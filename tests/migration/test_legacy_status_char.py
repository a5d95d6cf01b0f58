"""A legacy status column of type ``char(n)`` (bpchar, PostgreSQL): its values come back
padded with spaces to ``n`` unless cast to text (which strips them). unistatus reads it
as trimmed text everywhere: the adapter's reads and status changes, the check, the
rollback's replay (found by an exploratory tester: 'PENDING    ...' unmappable on every
read and update, and the replay's false "the application's trigger stored ...")."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from unistatus.adapter.core import DualWriteAdapter
from unistatus.backfill import run_backfill
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode, UnifiedTransactionStatus
from unistatus.migration.check import run_check
from unistatus.migration.rollback import emergency_rollback

pytestmark = pytest.mark.postgres

M = DualWriteMode
S = UnifiedTransactionStatus
ROWS = 12


def char_status(db: Any) -> None:
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts ALTER COLUMN status TYPE char(30)")
        conn.exec_driver_sql(
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
            "updated_at) SELECT n, 1, 10.50, 'USDT', "
            "(CASE n %% 2 WHEN 0 THEN 'PENDING' ELSE 'APPROVED' END), now(), now() "
            f"FROM generate_series(1, {ROWS}) AS n"
        )
        conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('cashouts', 'id'), {ROWS})")


def legacy_status(db: Any, legacy_id: int) -> str:
    with db.engine.connect() as conn:
        return str(
            conn.exec_driver_sql(
                f"SELECT status::text FROM cashouts WHERE id = {legacy_id}"
            ).scalar_one()
        )


def test_a_char_status_column_reads_and_replays_as_its_trimmed_text(
    scratch_pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    db = scratch_pg
    char_status(db)
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    try:
        assert adapter.get_transaction_status("cashout:2")[0] is S.PENDING
        changed = adapter.update_status("cashout:2", "CANCELLED", "t", "t")
        assert changed.overall_success and changed.changed, changed.as_dict()
        assert run_backfill(db.engine, db.settings, workers=1).as_dict()["quarantined"] == 0
        report = run_check(db.engine, db.settings, store=False)
        assert (report.total, report.consistent) == (ROWS, ROWS)

        set_mode(db.engine, M.UNIFIED_ONLY, reason="t", actor="t")
        adapter.modes.refresh()
        changed = adapter.update_status("cashout:4", "CANCELLED", "t", "t")
        assert changed.overall_success and changed.changed, changed.as_dict()
    finally:
        adapter.close()
    with caplog.at_level(logging.WARNING):
        emergency_rollback(db.engine, db.settings, actor="t", reason="t")
    assert "trigger stored" not in caplog.text, caplog.text
    assert legacy_status(db, 4) == "CANCELLED"
    report = run_check(db.engine, db.settings, store=False)
    assert (report.total, report.consistent) == (ROWS, ROWS)
