"""A legacy status column of the application's own type (PostgreSQL).

Payments applications often keep a status in an enum type. unistatus reads, compares
and maps the legacy status as text, so every statement that reads the column casts it
to text, and every one that writes it casts the text back to the column's type: the
backfill, the check, the adapter in each mode, the capture of a bypass write, the repair
and the rollback's replay all work on it. A type that cannot hold the statuses (an
integer code) is refused with a clear error before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support.refusals import assert_refused_at_start
from unistatus.adapter.core import DualWriteAdapter
from unistatus.backfill import run_backfill
from unistatus.db.control import set_mode
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.domain import mapping
from unistatus.domain.statuses import DualWriteMode, UnifiedTransactionStatus
from unistatus.errors import ConfigError
from unistatus.migration import capture
from unistatus.migration.archive import export_archive, record_verified, verify_archive
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair
from unistatus.migration.retire import retire_legacy_columns, status_checksum, undo_cleanup
from unistatus.migration.rollback import emergency_rollback
from unistatus.sim.seed import seed_legacy

M = DualWriteMode
S = UnifiedTransactionStatus
ROWS = 40


def cashout_labels() -> list[str]:
    return sorted({r["legacy"] for r in mapping.mapping_rows() if r["system"] == "CASHOUT"})


def enum_status(db: Any, leave_out: str | None = None) -> None:
    """cashouts.status as an enum of the cashout statuses (its currency an enum too),
    with ROWS rows in it."""
    labels = ", ".join(f"'{label}'" for label in cashout_labels() if label != leave_out)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TYPE cashout_state AS ENUM ({labels})")
        conn.exec_driver_sql(
            "ALTER TABLE cashouts ALTER COLUMN status TYPE cashout_state "
            "USING status::cashout_state"
        )
        # The currency too: compared with the unified row's, as text.
        conn.exec_driver_sql("CREATE TYPE currency_code AS ENUM ('USD', 'EUR', 'USDT', 'NGN')")
        conn.exec_driver_sql(
            "ALTER TABLE cashouts ALTER COLUMN currency TYPE currency_code "
            "USING currency::currency_code"
        )
        conn.exec_driver_sql(
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
            "updated_at) SELECT n, 1, 10.50, 'USDT', "
            "(CASE n %% 3 WHEN 0 THEN 'EXECUTING' WHEN 1 THEN 'PENDING' ELSE 'APPROVED' END)"
            f"::cashout_state, now(), now() FROM generate_series(1, {ROWS}) AS n"
        )
        conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('cashouts', 'id'), {ROWS})")


def consistent(db: Any) -> tuple[int, int]:
    report = run_check(db.engine, db.settings, store=False)
    return report.total, report.consistent


def legacy_status(db: Any, legacy_id: int) -> str:
    with db.engine.connect() as conn:
        return str(
            conn.exec_driver_sql(
                f"SELECT status::text FROM cashouts WHERE id = {legacy_id}"
            ).scalar_one()
        )


def column_type(db: Any, schema: str, table: str, column: str) -> str:
    with db.engine.connect() as conn:
        return str(
            conn.execute(
                sa.text(
                    "SELECT udt_name FROM information_schema.columns WHERE table_schema = :s "
                    "AND table_name = :t AND column_name = :c"
                ),
                {"s": schema, "t": table, "c": column},
            ).scalar_one()
        )


def switch(db: Any, adapter: DualWriteAdapter, mode: DualWriteMode) -> None:
    set_mode(db.engine, mode, reason="t", actor="t")
    adapter.modes.refresh()


@pytest.mark.postgres
def test_an_enum_status_column_works_through_every_phase(scratch_pg: Any, tmp_path: Path) -> None:
    db = scratch_pg
    enum_status(db)
    assert run_backfill(db.engine, db.settings, workers=1).as_dict()["inserted"] == ROWS
    assert consistent(db) == (ROWS, ROWS)

    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    try:
        # Legacy primary: the adapter writes the enum.
        switch(db, adapter, M.DUAL_WRITE_LEGACY_PRIMARY)
        created = adapter.create_transaction("WALLET_CASHOUT", 7, "12.50", "USDT")
        assert created.overall_success, created.as_dict()
        new_id = created.legacy_entity_id
        assert new_id is not None
        entity = f"cashout:{new_id}"
        for status in ("FUNDS_HELD", "PROCESSING"):
            changed = adapter.update_status(entity, status, "t", "t")
            assert changed.overall_success and changed.changed, changed.as_dict()
        assert legacy_status(db, new_id) == "EXECUTING"
        assert adapter.get_transaction_status(entity)[0] is S.PROCESSING

        # A bypass write, captured: unified follows the enum's new value.
        capture.enable(db.engine, db.settings, actor="t", reason="t")
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE cashouts SET status = 'AWAITING_RESPONSE' WHERE id = {new_id}"
            )
        assert adapter.get_transaction_status(entity)[0] is S.AWAITING_RESPONSE
        assert consistent(db) == (ROWS + 1, ROWS + 1)

        # Unified primary: the reverse mapping's value is written into the enum.
        switch(db, adapter, M.DUAL_WRITE_UNIFIED_PRIMARY)
        changed = adapter.update_status(entity, "SUCCESS", "t", "t")
        assert changed.overall_success and changed.changed, changed.as_dict()
        assert legacy_status(db, new_id) == "SUCCESS"

        # Unified only: legacy frozen; the emergency rollback's replay writes the enum.
        switch(db, adapter, M.UNIFIED_ONLY)
        frozen = "cashout:3"  # EXECUTING in legacy, PROCESSING in unified
        changed = adapter.update_status(frozen, "FAILED", "t", "t")
        assert changed.overall_success and changed.changed, changed.as_dict()
        assert legacy_status(db, 3) == "EXECUTING"
        later = adapter.create_transaction("WALLET_CASHOUT", 8, "3", "USDT")
        assert later.overall_success, later.as_dict()
    finally:
        adapter.close()
    emergency_rollback(db.engine, db.settings, actor="t", reason="t")
    assert legacy_status(db, 3) == "FAILED"
    assert consistent(db) == (ROWS + 2, ROWS + 2)

    # A repair that writes legacy (unified wins) casts as well.
    with db.engine.begin() as conn:
        # Marked as unistatus's own write: the capture leaves it, legacy diverges.
        conn.exec_driver_sql("SELECT set_config('unistatus.writer', 'on', true)")
        conn.exec_driver_sql("UPDATE cashouts SET status = 'PENDING' WHERE id = 6")
    assert consistent(db) == (ROWS + 2, ROWS + 1)
    run_repair(db.engine, db.settings, strategy="unified_wins", actor="t", reason="t")
    assert legacy_status(db, 6) == "EXECUTING"
    assert consistent(db) == (ROWS + 2, ROWS + 2)

    # Retired and restored: the column comes back as the enum, with every value.
    set_mode(db.engine, M.UNIFIED_ONLY, reason="t", actor="t")
    archive = tmp_path / "archive"
    export_archive(db.engine, db.settings, archive)
    record_verified(db.engine, verify_archive(db.engine, archive), actor="t")
    before = status_checksum(db.engine, db.settings)
    retired = retire_legacy_columns(db.engine, db.settings, actor="t", reason="t", compat=True)
    assert retired["dropped"]
    # A reader of the compatibility view gets the status as the enum it had.
    assert column_type(db, "unistatus_compat", "cashouts", "status") == "cashout_state"
    with db.engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT count(*) FROM unistatus_compat.cashouts "
            "WHERE status = 'EXECUTING'::cashout_state"
        ).scalar_one()
    assert found > 0
    assert undo_cleanup(db.engine, db.settings, actor="t")["undone"]
    assert status_checksum(db.engine, db.settings) == before
    assert column_type(db, "public", "cashouts", "status") == "cashout_state"


@pytest.mark.postgres
def test_a_status_column_that_cannot_hold_the_statuses_is_refused(scratch_pg: Any) -> None:
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE cashouts ALTER COLUMN status TYPE integer USING length(status)"
        )
        conn.exec_driver_sql(
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
            "updated_at) VALUES (1, 1, 1, 'USDT', 3, now(), now())"
        )
    assert_refused_at_start(
        db, r"legacy table 'cashouts': its status column 'status' is of type INTEGER"
    )


@pytest.mark.postgres
def test_an_enum_without_a_value_unistatus_writes_is_refused_at_start(scratch_pg: Any) -> None:
    """Found missing only when a rollback's replay writes it, the label would stop the
    rollback: it is asked for before anything runs."""
    db = scratch_pg
    enum_status(db, leave_out="FAILED")
    message = (
        r"legacy table 'cashouts': its status type cashout_state lacks 'FAILED', .*"
        r"ALTER TYPE cashout_state ADD VALUE 'FAILED'"
    )
    with pytest.raises(ConfigError, match=message):
        resolve_legacy_tables(db.engine, db.settings)
    with pytest.raises(ConfigError, match=message):
        DualWriteAdapter(db.engine, settings=db.settings)


@pytest.mark.postgres
def test_the_simulator_seeds_into_an_enum(scratch_pg: Any) -> None:
    db = scratch_pg
    enum_status(db)
    seeded = seed_legacy(db.engine, db.settings, 30, seed=1, systems=["CASHOUT"])
    assert seeded == {"CASHOUT": 30}
    assert run_backfill(db.engine, db.settings, workers=1).as_dict()["inserted"] == ROWS + 30
    assert consistent(db) == (ROWS + 30, ROWS + 30)
