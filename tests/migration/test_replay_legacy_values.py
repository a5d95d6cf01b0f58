"""A transaction born in UNIFIED_ONLY, replayed into a legacy table with columns of its own.

The rollback's replay creates its legacy row. When the table has required columns of the
application's own (NOT NULL, no default), the create's ``legacy_values`` are kept with
it (in its first history row) and the replay inserts them, typed as the table says. A
create that cannot be inserted (made before its values were kept, or refused by the
database) is a replay conflict for the operator, never a crash of the rollback.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.legacy_columns import legacy_columns
from unistatus import DualWriteAdapter, DualWriteMode, InputError
from unistatus.db.control import get_mode
from unistatus.migration import phases, rollback
from unistatus.migration.replay import pending_count
from unistatus.migration.replay_conflicts import list_conflicts
from unistatus.migration.replay_resolve import resolve

M = DualWriteMode
COLUMNS = {
    "destination": "VARCHAR(64) NOT NULL",
    "priority": "INTEGER",
    "fee": "NUMERIC(6, 2)",
    "due_on": "DATE",
}
VALUES: dict[str, Any] = {
    "destination": "IBAN DE89 3704",
    "priority": 2,
    "fee": Decimal("1.50"),
    "due_on": date(2026, 3, 1),
}


def unified_only(db: Database) -> DualWriteAdapter:
    for _ in range(4):
        phases.advance(db.engine, db.settings, actor="setup", force=True, reason="test setup")
    assert get_mode(db.engine) is M.UNIFIED_ONLY
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    adapter.modes.refresh()
    return adapter


def roll_back(db: Database) -> dict[str, Any]:
    change = rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason="t")
    assert change.to_mode is M.DUAL_WRITE_LEGACY_PRIMARY
    assert pending_count(db.engine) == 0
    replay: dict[str, Any] = change.details["replay"]
    return replay


def legacy_rows(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM cashouts ORDER BY id")).mappings().all()
    return [dict(r) for r in rows]


def legacy_id_of(db: Database, utx_id: str | None) -> int | None:
    with db.engine.connect() as conn:
        q = sa.text("SELECT legacy_id FROM unified_transactions WHERE id = :i")
        found = conn.execute(q, {"i": utx_id}).scalar_one()
    return int(found) if found is not None else None


@pytest.fixture
def app_db(db: Database) -> Iterator[Database]:
    with legacy_columns(db, COLUMNS):
        yield db


def test_the_replay_inserts_the_legacy_values_kept_with_the_create(app_db: Database) -> None:
    a = unified_only(app_db)
    r = a.create_transaction("WALLET_CASHOUT", 7, "12.5", "USD", legacy_values=VALUES)
    assert r.overall_success and r.legacy_entity_id is None
    assert a.update_status(r.entity_id, "PROCESSING", "paid", "svc").overall_success
    replay = roll_back(app_db)
    assert (replay["legacy_created"], replay["conflicts"]) == (1, 0)
    (row,) = legacy_rows(app_db)
    assert row["status"] == "EXECUTING" and row["id"] == legacy_id_of(app_db, r.entity_id)
    kept = {name: row[name] for name in VALUES}
    assert Decimal(str(kept.pop("fee"))) == VALUES["fee"]
    due = kept.pop("due_on")
    assert (due if isinstance(due, date) else date.fromisoformat(due)) == VALUES["due_on"]
    assert kept == {"destination": "IBAN DE89 3704", "priority": 2}
    assert a.check_consistency(r.entity_id)["consistent"] is True


def test_a_unified_only_create_without_a_required_value_is_refused(app_db: Database) -> None:
    a = unified_only(app_db)
    with pytest.raises(InputError, match=r"'destination'.*pass it in legacy_values"):
        a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
    with pytest.raises(InputError, match=r"metadata.*'unistatus.legacy_values' is reserved"):
        a.create_transaction(
            "WALLET_CASHOUT",
            7,
            "1",
            "USD",
            legacy_values={"destination": "x"},
            metadata={"unistatus.legacy_values": {}},
        )
    assert app_db.count("unified_transactions") == 0


def test_an_old_create_without_kept_values_is_a_replay_conflict(db: Database) -> None:
    """Made while the table needed no values (as before they were kept); the table
    gains a required column before the rollback."""
    a = unified_only(db)
    old = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
    with legacy_columns(db, {"destination": "VARCHAR(64) NOT NULL"}):
        restarted = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
        new = restarted.create_transaction(
            "WALLET_CASHOUT", 8, "1", "USD", legacy_values={"destination": "d"}
        )
        replay = roll_back(db)
        assert (replay["legacy_created"], replay["conflicts"]) == (1, 1)
        assert [r["destination"] for r in legacy_rows(db)] == ["d"]
        assert legacy_id_of(db, new.entity_id) is not None
        assert legacy_id_of(db, old.entity_id) is None
        (conflict,) = list_conflicts(db.engine)
        assert conflict.transaction_id == old.entity_id
        assert conflict.cause == "legacy_values_missing"
        # The operator keeps legacy as it is (without the transaction): resolved.
        done = resolve(
            db.engine, db.settings, conflict.id, action="keep_legacy", actor="ops", reason="r"
        )
        assert done.resolution == "keep_legacy"


def test_a_create_the_database_refuses_is_a_replay_conflict(app_db: Database) -> None:
    if app_db.backend == "postgres":
        ddl = "ALTER TABLE cashouts ADD CONSTRAINT t_no_blocked CHECK (destination <> 'blocked')"
    else:
        ddl = (
            "CREATE TRIGGER t_no_blocked BEFORE INSERT ON cashouts WHEN NEW.destination = "
            "'blocked' BEGIN SELECT RAISE(ABORT, 't_no_blocked'); END"
        )
    with app_db.engine.begin() as conn:
        conn.exec_driver_sql(ddl)
    a = unified_only(app_db)
    refused = a.create_transaction(
        "WALLET_CASHOUT", 7, "1", "USD", legacy_values={"destination": "blocked"}
    )
    fine = a.create_transaction(
        "WALLET_CASHOUT", 8, "1", "USD", legacy_values={"destination": "ok"}
    )
    replay = roll_back(app_db)
    assert (replay["legacy_created"], replay["conflicts"]) == (1, 1)
    assert [r["destination"] for r in legacy_rows(app_db)] == ["ok"]
    assert legacy_id_of(app_db, fine.entity_id) is not None
    (conflict,) = list_conflicts(app_db.engine)
    assert (conflict.transaction_id, conflict.cause) == (refused.entity_id, "legacy_insert_refused")


def test_the_replay_inserts_a_uuid_an_interval_and_a_nan_kept_with_the_create(
    db: Database,
) -> None:
    """Values JSON has no word for, which the dual modes write as they are: kept, and
    inserted by the replay as the columns' own types."""
    if db.backend != "postgres":
        pytest.skip("UUID and INTERVAL columns, and a NaN a DOUBLE PRECISION takes")
    columns = {"ext_ref": "UUID NOT NULL", "wait": "INTERVAL", "rate": "DOUBLE PRECISION"}
    ref, wait = uuid.uuid4(), timedelta(days=-2, seconds=5, microseconds=7)
    with legacy_columns(db, columns):
        a = unified_only(db)
        values = {"ext_ref": ref, "wait": wait, "rate": float("nan")}
        r = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values=values)
        assert r.overall_success and r.legacy_entity_id is None
        replay = roll_back(db)
        assert (replay["legacy_created"], replay["conflicts"]) == (1, 0)
        (row,) = legacy_rows(db)
        assert (row["ext_ref"], row["wait"]) == (ref, wait)
        assert math.isnan(row["rate"])
