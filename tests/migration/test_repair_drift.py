"""``repair`` fixes ``legacy_status_drift``: unified's image of the legacy status is set
from the legacy row, in every strategy, and even in UNIFIED_ONLY where it is the one
thing repair may write (issue 10, section 6).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from support.check_data import T0, T1, insert_case, tables
from unistatus.adapter.core import DualWriteAdapter
from unistatus.db.control import set_mode
from unistatus.db.tables import exchanges, status_history
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair
from unistatus.migration.repair_plan import Strategy, plan_repair
from unistatus.migration.repair_queue import open_repair_count

EXCHANGE = LegacySystemType.EXCHANGE


def _image(db: Any, legacy_id: int) -> tuple[str, str | None, str]:
    """(legacy status, unified legacy_status, unified status) of one exchange."""
    with db.engine.connect() as conn:
        legacy = conn.execute(
            sa.select(exchanges.c.status).where(exchanges.c.id == legacy_id)
        ).scalar_one()
        image, status = conn.execute(
            sa.select(U.c.legacy_status, U.c.status).where(
                U.c.legacy_system == "EXCHANGE", U.c.legacy_id == legacy_id
            )
        ).one()
    return legacy, image, status


@pytest.mark.parametrize("strategy", list(Strategy))
def test_the_plan_sets_legacy_status_from_legacy_whatever_the_strategy(strategy: Strategy) -> None:
    base = {"user_id": 1, "amount": Decimal("1"), "currency": "USD", "updated_at": T0}
    legacy = {"id": 1, "status": "RATE_LOCKED", **base, "updated_at": T0}
    unified = {
        "id": "UTX300000000000001",
        "legacy_id": 1,
        "status": "PENDING",
        "legacy_status": "CREATED",
        **base,
        "updated_at": T1,  # newer: newest_wins would pick unified
    }
    plan = plan_repair(EXCHANGE, legacy, unified, strategy)
    assert plan.kinds == ["legacy_status_drift"]
    assert plan.action == "write_unified" and plan.unified_values == {
        "legacy_status": "RATE_LOCKED"
    }
    # With a field difference too, the strategy decides the field; the image is exact.
    plan = plan_repair(EXCHANGE, legacy, {**unified, "currency": "EUR"}, strategy)
    assert plan.kinds == ["field_mismatch", "legacy_status_drift"]
    if plan.action == "write_unified":
        assert plan.unified_values["legacy_status"] == "RATE_LOCKED"
    else:
        assert plan.legacy_values["status"] == "RATE_LOCKED"
        assert plan.unified_values == {"legacy_status": "RATE_LOCKED"}


@pytest.mark.parametrize("strategy", list(Strategy))
def test_repair_fixes_the_drift_and_audits_it(db: Any, strategy: Strategy) -> None:
    lt = tables(db.engine, db.settings)[EXCHANGE]
    with db.engine.begin() as conn:
        insert_case(conn, lt, 1, {"status": "RATE_LOCKED"}, {"status": "PENDING"})
        insert_case(
            conn,
            lt,
            2,
            {"status": "RATE_LOCKED"},
            {"status": "PENDING", "legacy_status": "CREATED"},
        )
        insert_case(
            conn,
            lt,
            3,
            {"status": "PAYMENT_CONFIRMED"},
            {"status": "PAYMENT_CONFIRMED", "legacy_status": "PAYMENT_RECEIVED", "user_id": 9},
        )
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t")
    found = run_check(db.engine, db.settings, systems=["EXCHANGE"])
    assert found.inconsistencies["legacy_status_drift"] == 2 and found.inconsistent == 2

    report = run_repair(db.engine, db.settings, strategy=strategy, actor="ops", reason="drift")
    assert report.repaired == 2 and report.repaired_kinds["legacy_status_drift"] == 2
    assert _image(db, 2) == ("RATE_LOCKED", "RATE_LOCKED", "PENDING")
    assert _image(db, 3)[:2] == ("PAYMENT_CONFIRMED", "PAYMENT_CONFIRMED")
    assert run_check(db.engine, db.settings).is_consistent
    with db.engine.connect() as conn:
        audit = conn.execute(sa.select(status_history).where(status_history.c.legacy_id == 2)).one()
    assert (audit.from_legacy_status, audit.to_legacy_status) == ("RATE_LOCKED", "RATE_LOCKED")
    assert audit.meta["before"]["unified"]["legacy_status"] == "CREATED"
    assert audit.meta["after"]["unified"]["legacy_status"] == "RATE_LOCKED"
    assert audit.meta["actor"] == "ops" and audit.meta["reason"] == "drift"


def test_in_unified_only_only_the_drift_of_a_settled_transaction_is_repaired(db: Any) -> None:
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    ids = [adapter.create_transaction("EXCHANGE", 7, "10", "USD").legacy_entity_id for _ in "ab"]
    drifted, busy = (int(i) for i in ids if i is not None)
    with db.engine.begin() as conn:  # as a legacy-only change leaves them
        conn.execute(sa.update(exchanges).values(status="RATE_LOCKED"))
    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="t", force=True)
    # A change made while legacy is frozen: its image is newer than legacy by design.
    assert adapter.update_status(
        f"exchange:{busy}", "AWAITING_PAYMENT", "paid", "t"
    ).overall_success
    legacy_busy, image_busy, _ = _image(db, busy)
    assert legacy_busy == "RATE_LOCKED" and image_busy != "RATE_LOCKED"

    checked = run_check(db.engine, db.settings)
    assert checked.inconsistencies["legacy_status_drift"] == 1  # the busy one is projected
    report = run_repair(db.engine, db.settings, strategy="unified_wins", reason="before retire")
    assert report.repaired_kinds == {"legacy_status_drift": 1}
    assert _image(db, drifted)[:2] == ("RATE_LOCKED", "RATE_LOCKED")
    assert _image(db, busy)[:2] == (legacy_busy, image_busy)  # left for the replay
    assert run_check(db.engine, db.settings).is_consistent


def test_repair_after_the_retirement_is_a_clear_refusal(db: Any, tmp_path: Any) -> None:
    """In UNIFIED_ONLY repair now runs; with the columns dropped it stops with a clear
    error before reading anything (the queue row included), and writes nothing."""
    from unistatus.db.tables import repair_queue
    from unistatus.errors import ConfigError
    from unistatus.migration.archive import export_archive, record_verified, verify_archive
    from unistatus.migration.retire import retire_legacy_columns, undo_cleanup

    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    created = adapter.create_transaction("EXCHANGE", 7, "10", "USD")
    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="t", force=True)
    export_archive(db.engine, db.settings, tmp_path / "a")
    record_verified(db.engine, verify_archive(db.engine, tmp_path / "a"), actor="t")
    with db.engine.begin() as conn:  # an open queue row (it is read first)
        conn.execute(
            sa.insert(repair_queue).values(
                transaction_id=created.entity_id, source="dual_write", error="x", created_at=T1
            )
        )
    retire_legacy_columns(db.engine, db.settings, actor="t", reason="t")
    try:
        with pytest.raises(ConfigError, match="status columns are retired.*--undo"):
            run_repair(db.engine, db.settings, strategy="unified_wins", reason="t")
        assert open_repair_count(db.engine) == 1
    finally:
        undo_cleanup(db.engine, db.settings, actor="t", reason="t")
