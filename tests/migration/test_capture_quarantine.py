"""The capture's quarantine: unmappable values that bypass writers (and the backfill) set
aside, and what happens to the row once it is mappable again (docs/capture.md).

A long unmappable value never fails the writer's statement (nor the switch that catches
up, nor a backfill batch): the quarantine keeps a cut image of it. A shared field changed
while the row's status was unmappable is not lost: the row is taken whole once it maps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in
from support.capture_data import captured, history_of, legacy_status, raw, unified_of
from support.phases import to_phase
from support.refusing import refuse
from unistatus import DualWriteMode
from unistatus.backfill import quarantine_count, retry_quarantine, run_backfill
from unistatus.config import CONFIG_FILE_ENV, load_settings
from unistatus.db.control import set_mode
from unistatus.db.tables_backfill import backfill_quarantine
from unistatus.migration import capture
from unistatus.migration.check import run_check
from unistatus.migration.quarantine_retry import retry_quarantine as retry
from unistatus.migration.rollback import emergency_rollback

M = DualWriteMode
Q = backfill_quarantine
T0 = "2026-01-01 00:00:00"


@pytest.fixture
def cap(db: Database) -> Iterator[Database]:
    with captured(db):
        yield db


def quarantined(db: Database) -> dict[int, tuple[str | None, str, bool]]:
    """Each quarantine entry's (raw value, reason, whether still open), by legacy id."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(Q.c.legacy_id, Q.c.raw_status, Q.c.reason, Q.c.resolved_at.is_(None))
        ).all()
    return {r[0]: (r[1], r[2], bool(r[3])) for r in rows}


def cut(value: str) -> str:
    """What the quarantine keeps of a value longer than its column (docs/capture.md)."""
    return f"{value[:40]}...({len(value)} chars)"


def insert_cashout(db: Database, lid: int, status: str) -> None:
    raw(
        db,
        "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, updated_at) "
        f"VALUES (:id, 7, 10.50, 'USD', :status, '{T0}', '{T0}')",
        params={"id": lid, "status": status},
    )


# --- D4: a value longer than the quarantine's column ------------------------------------------


@pytest.fixture
def text_status(scratch_pg: Database) -> Database:
    """PostgreSQL, the legacy status column of type text (any length); capture not yet
    enabled (a trigger's column cannot change type)."""
    with scratch_pg.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE cashouts ALTER COLUMN status TYPE text"))
    return scratch_pg


@pytest.mark.postgres
def test_a_long_unmappable_value_is_quarantined_cut_and_the_writer_unharmed(
    text_status: Database,
) -> None:
    db = text_status
    long_update, long_insert, long_logged = "X" * 65, "Y" * 300, "Z" * 1000
    with captured(db):
        a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
        lid = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").legacy_entity_id or 0
        before = unified_of(db, "CASHOUT", lid)

        # An UPDATE (the row has its unified row) and an INSERT (it has none).
        raw(
            db,
            "UPDATE cashouts SET status = :s WHERE id = :id",
            params={"s": long_update, "id": lid},
        )
        insert_cashout(db, 900, long_insert)
        assert legacy_status(db, "cashouts", lid) == long_update  # the writers succeeded
        assert legacy_status(db, "cashouts", 900) == long_insert
        assert unified_of(db, "CASHOUT", lid) == before and unified_of(db, "CASHOUT", 900) is None
        assert quarantined(db) == {
            lid: (cut(long_update), "unknown_status", True),
            900: (cut(long_insert), "unknown_status", True),
        }

        # Written while LEGACY_ONLY: the switch's catch-up sets it aside, and succeeds.
        other = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").legacy_entity_id or 0
        set_mode(db.engine, M.LEGACY_ONLY, reason="test", actor="test")
        raw(
            db,
            "UPDATE cashouts SET status = :s WHERE id = :id",
            params={"s": long_logged, "id": other},
        )
        set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
        assert quarantined(db)[other] == (cut(long_logged), "unknown_status", True)

        # Corrected by the writers: migrated, the entries resolved.
        raw(
            db,
            "UPDATE cashouts SET status = 'EXECUTING' WHERE id IN (:a, :b, 900)",
            params={"a": lid, "b": other},
        )
        assert quarantine_count(db.engine) == 0
        assert run_check(db.engine, db.settings, store=False).is_consistent


@pytest.mark.postgres
def test_the_backfill_quarantines_a_long_value_cut_and_retries_it(text_status: Database) -> None:
    db = text_status
    long_value = "W" * 65
    insert_cashout(db, 1, "PENDING")
    insert_cashout(db, 2, long_value)
    report = run_backfill(db.engine, db.settings, batch_size=100).as_dict()
    assert (report["inserted"], report["quarantined"]) == (1, 1)
    assert quarantined(db) == {2: (cut(long_value), "unknown_status", True)}
    raw(db, "UPDATE cashouts SET status = 'PENDING' WHERE id = 2")
    assert retry_quarantine(db.engine, db.settings)["migrated"] == 1
    assert quarantined(db) == {2: (cut(long_value), "unknown_status", False)}
    assert unified_of(db, "CASHOUT", 2) is not None


# --- D2: a shared field changed while the status was unmappable --------------------------------


@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY])
def test_a_field_changed_while_quarantined_is_taken_when_the_row_maps_again(
    cap: Database, mode: M
) -> None:
    """The UPDATE of the amount while the status is unmappable is skipped (the row is
    quarantined); when the status maps again the row is taken whole, as the catch-up and a
    row without a unified row are, so the amount is not lost."""
    a = adapter_in(cap, mode)
    lid = a.create_transaction("WALLET_CASHOUT", 1, "10.5", "USD").legacy_entity_id or 0
    where = {"id": lid}
    raw(cap, "UPDATE cashouts SET status = 'REFUND_REQUESTED' WHERE id = :id", params=where)
    raw(cap, "UPDATE cashouts SET amount = 42 WHERE id = :id", params=where)
    assert quarantined(cap)[lid][2]  # open
    raw(cap, "UPDATE cashouts SET status = 'FAILED' WHERE id = :id", params=where)
    u = unified_of(cap, "CASHOUT", lid)
    assert u is not None
    assert (u["status"], u["legacy_status"], float(u["amount"]), u["version"]) == (
        "FAILED",
        "FAILED",
        42.0,
        2,
    )
    last = history_of(cap, "CASHOUT", lid)[-1]
    assert (last["from_status"], last["to_status"]) == ("PENDING", "FAILED")
    assert quarantined(cap)[lid] == ("REFUND_REQUESTED", "unknown_status", False)
    report = run_check(cap.engine, cap.settings, store=False)
    assert report.is_consistent, dict(report.inconsistencies)
    # Mapped again, the row is judged by what each statement changes, as before.
    raw(cap, "UPDATE cashouts SET amount = 43 WHERE id = :id", params=where)
    u = unified_of(cap, "CASHOUT", lid)
    assert u is not None and (u["status"], float(u["amount"]), u["version"]) == ("FAILED", 43.0, 3)


def test_a_field_fixed_while_legacy_is_frozen_keeps_the_status_awaiting_replay(
    cap: Database,
) -> None:
    """UNIFIED_ONLY: legacy's status is behind by design (the adapter's change awaits its
    replay). A row quarantined for a shared field (a negative amount) and then fixed is
    taken whole, but not its status: taking it would write legacy's older status over
    the adapter's committed change and supersede its replay."""
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "10", "USD", status="PROCESSING")
    assert created.entity_id is not None and created.legacy_entity_id is not None
    a = adapter_in(cap, M.UNIFIED_ONLY)
    assert a.update_status(created.entity_id, "AWAITING_RESPONSE", "r", "svc").changed
    where = {"id": created.legacy_entity_id}
    raw(cap, "UPDATE cashouts SET amount = -5 WHERE id = :id", params=where)
    assert quarantined(cap)[created.legacy_entity_id][2]  # open
    raw(cap, "UPDATE cashouts SET amount = 7 WHERE id = :id", params=where)
    u = unified_of(cap, "CASHOUT", created.legacy_entity_id)
    assert u is not None
    assert (u["status"], u["legacy_status"], float(u["amount"])) == (
        "AWAITING_RESPONSE",
        "AWAITING_RESPONSE",
        7.0,
    )
    assert legacy_status(cap, "cashouts", created.legacy_entity_id) == "EXECUTING"  # frozen
    out = emergency_rollback(cap.engine, cap.settings, actor="oncall", reason="test")
    assert out["conflicts"] == 0
    assert legacy_status(cap, "cashouts", created.legacy_entity_id) == "AWAITING_RESPONSE"


@pytest.mark.postgres
def test_a_field_fixed_while_legacy_lags_a_primary_wins_write_keeps_that_write(
    pg: Database,
) -> None:
    """DUAL_WRITE_UNIFIED_PRIMARY: legacy is behind on purpose after a ``primary_wins``
    write whose legacy side was refused (repair queued). A row quarantined for a shared
    field and then fixed is taken whole, but not its status: taking it would roll the
    acknowledged SUCCESS back to legacy's PROCESSING."""
    with captured(pg):
        to_phase(pg.engine, 3)
        a = adapter_in(pg, M.DUAL_WRITE_UNIFIED_PRIMARY, fallback="primary_wins")
        created = a.create_transaction("WALLET_CASHOUT", 1, "10", "USD")
        assert created.entity_id is not None and created.legacy_entity_id is not None
        assert a.update_status(created.entity_id, "PROCESSING", "go", "app").overall_success
        where = {"id": created.legacy_entity_id}
        raw(pg, "UPDATE cashouts SET amount = -5 WHERE id = :id", params=where)
        with refuse(pg, "cashouts", "SUCCESS"):
            paid = a.update_status(created.entity_id, "SUCCESS", "paid", "app")
        assert paid.overall_success and not paid.secondary_success
        raw(pg, "UPDATE cashouts SET amount = 7 WHERE id = :id", params=where)
        u = unified_of(pg, "CASHOUT", created.legacy_entity_id)
        assert u is not None
        assert (u["status"], u["legacy_status"], float(u["amount"])) == ("SUCCESS", "SUCCESS", 7.0)


# --- the quarantine retry of a bypass writer's value, once the config maps it --------------


@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY])
def test_the_retry_brings_a_quarantined_bypass_write_in_step_once_the_config_maps_it(
    cap: Database, mode: M, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bypass writer's unmappable value on a row that has its unified row: the capture
    sets it aside. Once the config maps it and the capture is enabled again, ``backfill
    --retry-quarantine`` brings the unified row in step (a history row), as a later
    write would. It resolved the entry as ``migrated`` and wrote nothing: the unified
    row stayed behind, check found a status mismatch, and the quarantine alert cleared
    (exploratory review)."""
    a = adapter_in(cap, mode)
    lid = a.create_transaction("WALLET_CASHOUT", 1, "10", "USD").legacy_entity_id or 0
    raw(cap, "UPDATE cashouts SET status = 'REFUND_REQUESTED' WHERE id = :id", params={"id": lid})
    assert quarantined(cap)[lid] == ("REFUND_REQUESTED", "unknown_status", True)
    written = len(history_of(cap, "CASHOUT", lid))
    config = tmp_path / "unistatus.toml"
    config.write_text('[mapping.CASHOUT]\nREFUND_REQUESTED = "CANCELLED"\n')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(config))
    settings = load_settings(database_url=cap.url, schema=cap.settings.schema)
    capture.enable(cap.engine, settings, actor="test", reason="the mapping extended")
    done = retry(cap.engine, settings)
    assert (done["migrated"], done["inserted"], done["still_unmappable"]) == (1, 0, 0)
    u = unified_of(cap, "CASHOUT", lid)
    assert u is not None and (u["status"], u["legacy_status"]) == ("CANCELLED", "REFUND_REQUESTED")
    assert len(history_of(cap, "CASHOUT", lid)) == written + 1
    assert quarantined(cap)[lid] == ("REFUND_REQUESTED", "unknown_status", False)
    assert run_check(cap.engine, settings, store=False).is_consistent


def test_the_retry_leaves_a_row_whose_unified_side_moved_on_since_for_an_operator(
    cap: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In UNIFIED_ONLY legacy is frozen: an acknowledged change made after the bypass
    writer's value was set aside is newer than the legacy row. Taking the legacy row
    whole overwrote it (PROCESSING back to CANCELLED, review). The entry stays open,
    counted as waiting, and unified keeps its newer status."""
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    made = a.create_transaction("WALLET_CASHOUT", 1, "10", "USD")
    lid = made.legacy_entity_id or 0
    raw(cap, "UPDATE cashouts SET status = 'REFUND_REQUESTED' WHERE id = :id", params={"id": lid})
    frozen = adapter_in(cap, M.UNIFIED_ONLY)
    assert frozen.update_status(made.entity_id, "PROCESSING", "later", "ops").overall_success
    config = tmp_path / "unistatus.toml"
    config.write_text('[mapping.CASHOUT]\nREFUND_REQUESTED = "CANCELLED"\n')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(config))
    settings = load_settings(database_url=cap.url, schema=cap.settings.schema)
    capture.enable(cap.engine, settings, actor="test", reason="the mapping extended")
    written = len(history_of(cap, "CASHOUT", lid))
    done = retry(cap.engine, settings)
    assert (done["migrated"], done["in_step_needed"]) == (0, 1)
    u = unified_of(cap, "CASHOUT", lid)
    assert u is not None and u["status"] == "PROCESSING"
    assert len(history_of(cap, "CASHOUT", lid)) == written
    assert quarantined(cap)[lid][2]  # still open
