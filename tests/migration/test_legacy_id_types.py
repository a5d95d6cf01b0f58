"""A legacy id column of the application's own integer type (PostgreSQL).

Django's AutoField and older Rails tables key their rows with a 4-byte ``integer``; the
UTX range bound (14 digits) does not fit one, so every comparison with it is bound as a
BIGINT. A key that is not an integer at all (a UUID) cannot derive a UTX id and is
refused with a clear error before anything is written.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from support.refusals import assert_refused_at_start
from unistatus.adapter.core import DualWriteAdapter
from unistatus.adapter.model import OperationEvent
from unistatus.backfill import run_backfill
from unistatus.clock import utcnow
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode, UnifiedTransactionStatus
from unistatus.errors import EntityNotFoundError, InputError
from unistatus.migration import capture
from unistatus.migration.check import run_check
from unistatus.sim.seed import seed_legacy


@pytest.mark.postgres
def test_a_four_byte_integer_id_works(scratch_pg: Any) -> None:
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts ALTER COLUMN id TYPE integer")
    seed_legacy(db.engine, db.settings, 90, seed=1)
    assert run_backfill(db.engine, db.settings, workers=1).as_dict()["inserted"] == 90
    full = run_check(db.engine, db.settings, store=False)
    assert (full.total, full.consistent) == (90, 90)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    try:
        created = adapter.create_transaction("WALLET_CASHOUT", 7, "12.50", "USD")
        assert created.overall_success, created.as_dict()
        entity = f"cashout:{created.legacy_entity_id}"
        changed = adapter.update_status(entity, "FUNDS_HELD", "t", "t")
        assert changed.overall_success and changed.changed, changed.as_dict()
        capture.enable(db.engine, db.settings, actor="t", reason="t")
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE cashouts SET status = 'EXECUTING' WHERE id = {created.legacy_entity_id}"
            )
        assert adapter.get_transaction_status(entity)[0] is UnifiedTransactionStatus.PROCESSING
    finally:
        adapter.close()
    since = run_check(db.engine, db.settings, since=utcnow() - timedelta(hours=1), store=False)
    assert since.total >= 1 and since.consistent == since.total
    full = run_check(db.engine, db.settings, store=False)
    assert (full.total, full.consistent) == (91, 91)


@pytest.mark.postgres
def test_an_id_beyond_a_four_byte_key_is_not_found(scratch_pg: Any) -> None:
    """A reference the API accepts but a 4-byte key cannot hold is no such entity (it
    was a database error, counted as a failure)."""
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts ALTER COLUMN id TYPE integer")
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    try:
        beyond = "cashout:3000000000"
        with pytest.raises(EntityNotFoundError):
            adapter.update_status(beyond, "OTP_PENDING", "t", "t")
        with pytest.raises(EntityNotFoundError):
            adapter.get_transaction_status(beyond)
        with pytest.raises(EntityNotFoundError):
            adapter.check_consistency(beyond)
    finally:
        adapter.close()


@pytest.mark.postgres
def test_linking_an_id_beyond_a_four_byte_key_is_an_input_error(scratch_pg: Any) -> None:
    """``legacy_entity_id`` only links, and no row of a 4-byte key has this id: the
    InputError of an id that names no row, the caller's transaction untouched, nothing
    counted as a failure (it was an aborted transaction, NumericValueOutOfRange)."""
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts ALTER COLUMN id TYPE integer")
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    events: list[OperationEvent] = []
    adapter.observers.append(events.append)
    link = partial(adapter.create_transaction, "WALLET_CASHOUT", 1, "1.00", "USD")
    try:
        with db.engine.connect() as conn, conn.begin():
            with pytest.raises(InputError, match=r"cashout:3000000000 does not exist"):
                link(legacy_entity_id=3_000_000_000, connection=conn)
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
        with pytest.raises(InputError, match=r"cashout:3000000000 does not exist"):
            link(legacy_entity_id=3_000_000_000)
    finally:
        adapter.close()
    assert [e for e in events if not e.success] == []


@pytest.mark.postgres
@pytest.mark.parametrize(
    "kind",
    ["CREATE DOMAIN cashout_key AS bigint", "NUMERIC(18, 0)"],
    ids=["domain", "numeric"],
)
def test_an_integer_key_of_another_declaration_is_taken(scratch_pg: Any, kind: str) -> None:
    db = scratch_pg
    with db.engine.begin() as conn:
        if kind.startswith("CREATE DOMAIN"):
            conn.exec_driver_sql(kind)
            kind = "cashout_key"
        conn.exec_driver_sql(f"ALTER TABLE cashouts ALTER COLUMN id TYPE {kind}")
    seed_legacy(db.engine, db.settings, 30, seed=1)
    assert run_backfill(db.engine, db.settings, workers=1).as_dict()["inserted"] == 30


@pytest.mark.postgres
def test_a_key_that_is_not_an_integer_is_refused(scratch_pg: Any) -> None:
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE cashouts")
        conn.exec_driver_sql(
            "CREATE TABLE cashouts (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
            "status varchar(64), user_id bigint, amount numeric(20, 8), currency varchar(10), "
            "created_at timestamptz, updated_at timestamptz)"
        )
        conn.exec_driver_sql(
            "INSERT INTO cashouts (status, user_id, amount, currency, created_at, updated_at) "
            "VALUES ('PENDING', 1, 1, 'USD', now(), now())"
        )
    assert_refused_at_start(db, r"legacy table 'cashouts': its id column 'id' is of type UUID")


@pytest.mark.postgres
def test_a_key_near_the_largest_bigint_is_checked(pg: Any) -> None:
    """The check's key slices ended past the largest BIGINT: "bigint out of range" on a
    table whose ids reach 9223372036854775806 (an exploratory tester)."""
    with pg.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
            "updated_at) VALUES (1, 1, 1, 'USD', 'PENDING', now(), now()), "
            "(99999999999999, 1, 1, 'USD', 'PENDING', now(), now()), "
            "(9223372036854775806, 1, 1, 'USD', 'APPROVED', now(), now())"
        )
    # Not backfilled (a UTX id carries 14 digits of a legacy id): missing, and counted.
    report = run_check(pg.engine, pg.settings, store=False, examples=5)
    assert (report.total, report.consistent) == (3, 0)
    assert report.inconsistencies["missing_unified"] == 3
