"""The application's own legacy columns (issue 12 section 2).

The cashouts table gets a NOT NULL ``destination`` (no default) and a nullable
``priority``, as a real legacy table has columns of its own: ``create_transaction`` takes
them in ``legacy_values``, checked against the reflected table; without them the create
is refused clearly before anything is written. A legacy row the application inserted in
its own transaction is linked in that transaction (``legacy_entity_id=`` with
``connection=``) in every mode.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in, snapshot
from support.legacy_columns import legacy_columns
from unistatus import DualWriteMode, InputError
from unistatus.db.tables import status_history
from unistatus.errors import CallerWriteRefusedError
from unistatus.migration import phases, rollback

M = DualWriteMode
WRITES_LEGACY = [M.LEGACY_ONLY, M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
APP_COLUMNS = {
    "destination": "VARCHAR(64) NOT NULL",
    "priority": "INTEGER",
    "fee": "NUMERIC(4, 2)",
    "rank": "SMALLINT",
}


@pytest.fixture
def app_db(db: Database) -> Iterator[Database]:
    """cashouts with the application's own columns."""
    with legacy_columns(db, APP_COLUMNS):
        yield db


def cashout(db: Database, legacy_id: int) -> dict[str, Any]:
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, destination, priority FROM cashouts WHERE id = :i"),
            {"i": legacy_id},
        ).one()
    return dict(row._mapping)


def count(db: Database, sql: str, **params: Any) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


@pytest.mark.parametrize("fallback", ["strict", "primary_wins"])
@pytest.mark.parametrize("mode", WRITES_LEGACY)
def test_legacy_values_go_into_the_legacy_row(
    app_db: Database, mode: DualWriteMode, fallback: str
) -> None:
    a = adapter_in(app_db, mode, fallback=fallback)
    r = a.create_transaction(
        "WALLET_CASHOUT",
        7,
        "12.50",
        "USD",
        legacy_values={"destination": "IBAN DE89 3704", "priority": 3},
    )
    assert r.overall_success and not r.has_inconsistency
    assert r.legacy_entity_id is not None
    assert cashout(app_db, r.legacy_entity_id) == {
        "status": "PENDING",
        "destination": "IBAN DE89 3704",
        "priority": 3,
    }
    unified = count(
        app_db, "SELECT count(*) FROM unified_transactions WHERE id = :i", i=r.entity_id
    )
    assert unified == (1 if mode.writes_unified else 0)
    if mode.writes_unified:
        assert a.check_consistency(r.entity_id)["consistent"] is True


@pytest.mark.parametrize("mode", WRITES_LEGACY)
def test_a_required_column_left_out_is_refused_before_anything_is_written(
    app_db: Database, mode: DualWriteMode
) -> None:
    a = adapter_in(app_db, mode)
    before = snapshot(app_db)
    with pytest.raises(InputError, match=r"'destination'.*pass it in legacy_values"):
        a.create_transaction("WALLET_CASHOUT", 7, "12.50", "USD")
    with pytest.raises(InputError, match=r"cashout:900 does not exist"):
        a.create_transaction("WALLET_CASHOUT", 7, "12.50", "USD", legacy_entity_id=900)
    assert snapshot(app_db) == before


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"destination": "x", "nope": 1}, r"has no column 'nope'"),
        ({"destination": 5}, r"destination.*expected str, got int"),
        ({"destination": None}, r"destination.*NOT NULL"),
        ({"destination": "x", "priority": "high"}, r"priority.*expected int, got str"),
        ({"destination": "x", "priority": True}, r"priority.*expected int, got bool"),
        ({"destination": "x" * 65}, r"destination.*too long"),
        ({"destination": "a\x00b"}, r"destination"),
        ({"destination": "x", "status": "PAID"}, r"cannot set 'status'"),
        ({"destination": "x", "id": 5}, r"cannot set 'id'"),
        ({"destination": "x", "amount": 5}, r"cannot set 'amount'"),
        ({"destination": "x", "updated_at": NOW}, r"cannot set 'updated_at'"),
        (["destination"], r"legacy_values must be a dict"),
        ({"destination": "x", "rank": 2**15}, r"'rank'.*out of range for SMALLINT"),
        ({"destination": "x", "rank": -(2**15) - 1}, r"'rank'.*out of range for SMALLINT"),
        ({"destination": "x", "fee": Decimal("12345.67")}, r"'fee'.*NUMERIC\(4, 2\)"),
        ({"destination": "x", "fee": Decimal("99.995")}, r"'fee'.*NUMERIC\(4, 2\)"),
        ({"destination": "x", "fee": 100}, r"'fee'.*NUMERIC\(4, 2\)"),
        ({"destination": "x", "fee": Decimal("1E+40")}, r"'fee'.*NUMERIC\(4, 2\)"),
    ],
)
def test_bad_legacy_values_are_refused_before_anything_is_written(
    app_db: Database, values: Any, message: str
) -> None:
    a = adapter_in(app_db, M.DUAL_WRITE_LEGACY_PRIMARY)
    before = snapshot(app_db)
    with pytest.raises(InputError, match=message):
        a.create_transaction("WALLET_CASHOUT", 7, "12.50", "USD", legacy_values=values)
    assert snapshot(app_db) == before


def test_integer_bounds_follow_the_declared_type(app_db: Database) -> None:
    a = adapter_in(app_db, M.DUAL_WRITE_LEGACY_PRIMARY)
    edge = {"destination": "x", "rank": -(2**15), "fee": Decimal("-99.99"), "priority": 2**31 - 1}
    r = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values=edge)
    assert r.overall_success and r.legacy_entity_id is not None
    assert cashout(app_db, r.legacy_entity_id)["priority"] == 2**31 - 1
    before = snapshot(app_db)
    big = {"destination": "x", "priority": 2**40}
    if app_db.backend == "postgres":  # INTEGER is 4 bytes there
        with pytest.raises(InputError, match=r"'priority'.*out of range for INTEGER"):
            a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values=big)
        assert snapshot(app_db) == before
    else:  # SQLite's INTEGER holds 8 bytes
        assert a.create_transaction(
            "WALLET_CASHOUT", 7, "1", "USD", legacy_values=big
        ).overall_success


def test_unified_only_keeps_legacy_values_for_the_replay(app_db: Database) -> None:
    """UNIFIED_ONLY writes no legacy row: the values are checked the same, required the
    same, and kept in the first history row for the rollback's replay
    (tests/migration/test_replay_legacy_values.py replays them)."""
    a = adapter_in(app_db, M.UNIFIED_ONLY)
    before = snapshot(app_db)
    with pytest.raises(InputError, match=r"'destination'.*pass it in legacy_values"):
        a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
    with pytest.raises(InputError, match=r"'rank'.*out of range for SMALLINT"):
        values = {"destination": "x", "rank": 2**15}
        a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values=values)
    assert snapshot(app_db) == before
    values = {"destination": "x", "fee": Decimal("1.50")}
    r = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values=values)
    assert r.overall_success and r.legacy_entity_id is None
    assert count(app_db, "SELECT count(*) FROM cashouts") == 0
    with app_db.engine.connect() as conn:
        meta = conn.execute(
            sa.select(status_history.c.meta).where(status_history.c.transaction_id == r.entity_id)
        ).scalar_one()
    assert meta == {"unistatus.legacy_values": {"destination": "x", "fee": "1.50"}}


def test_a_repeated_key_compares_the_legacy_values(app_db: Database) -> None:
    a = adapter_in(app_db, M.DUAL_WRITE_LEGACY_PRIMARY)
    first = a.create_transaction(
        "WALLET_CASHOUT", 7, "1", "USD", idempotency_key="k-1", legacy_values={"destination": "a"}
    )
    again = a.create_transaction(
        "WALLET_CASHOUT", 7, "1", "USD", idempotency_key="k-1", legacy_values={"destination": "a"}
    )
    assert again.replayed and again.entity_id == first.entity_id
    with pytest.raises(InputError, match="other arguments"):
        a.create_transaction(
            "WALLET_CASHOUT",
            7,
            "1",
            "USD",
            idempotency_key="k-1",
            legacy_values={"destination": "b"},
        )


def test_a_repeated_key_with_equal_decimals_in_legacy_values_is_replayed(
    app_db: Database,
) -> None:
    a = adapter_in(app_db, M.DUAL_WRITE_LEGACY_PRIMARY)
    values = {"destination": "a", "fee": Decimal("1.5")}
    first = a.create_transaction(
        "WALLET_CASHOUT", 7, "1", "USD", idempotency_key="k-dec", legacy_values=values
    )
    again = a.create_transaction(
        "WALLET_CASHOUT",
        7,
        "1",
        "USD",
        idempotency_key="k-dec",
        legacy_values={"destination": "a", "fee": Decimal("1.50")},
    )
    assert again.replayed and again.entity_id == first.entity_id


def test_linking_an_existing_row_checks_its_legacy_values(app_db: Database) -> None:
    a = adapter_in(app_db, M.DUAL_WRITE_LEGACY_PRIMARY)
    r = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values={"destination": "a"})
    args: Any = ("WALLET_CASHOUT", 7, "1", "USD", r.legacy_entity_id)
    assert a.create_transaction(*args, legacy_values={"destination": "a"}).entity_id == r.entity_id
    with pytest.raises(InputError, match="exists with destination='a', not 'b'"):
        a.create_transaction(*args, legacy_values={"destination": "b"})


# --- a legacy row the application inserted in its own transaction ----------------------


def insert_cashout(conn: sa.Connection) -> int:
    """The application's INSERT, on its own connection (not committed yet)."""
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO cashouts (user_id, amount, currency, status, destination, "
                "created_at, updated_at) VALUES (21, 30.00, 'EUR', 'APPROVED', 'wallet-9', "
                ":now, :now) RETURNING id"
            ),
            {"now": NOW},
        ).scalar_one()
    )


@pytest.mark.parametrize("mode", list(DualWriteMode))
def test_a_row_inserted_in_the_callers_transaction_is_linked_there(
    app_db: Database, mode: DualWriteMode
) -> None:
    a = adapter_in(app_db, mode)
    with app_db.engine.connect() as conn, conn.begin():
        legacy_id = insert_cashout(conn)
        r = a.create_transaction(
            "WALLET_CASHOUT", 21, "30.00", "EUR", legacy_entity_id=legacy_id, connection=conn
        )
        assert r.overall_success and r.legacy_entity_id == legacy_id
    assert cashout(app_db, legacy_id)["destination"] == "wallet-9"
    unified = count(
        app_db,
        "SELECT count(*) FROM unified_transactions WHERE legacy_id = :i AND status = 'FUNDS_HELD'",
        i=legacy_id,
    )
    history = count(
        app_db, "SELECT count(*) FROM unified_status_history WHERE legacy_id = :i", i=legacy_id
    )
    assert (unified, history) == ((1, 1) if mode.writes_unified else (0, 0))


@pytest.mark.parametrize("mode", list(DualWriteMode))
def test_a_linked_row_rolled_back_by_the_caller_leaves_nothing(
    app_db: Database, mode: DualWriteMode
) -> None:
    a = adapter_in(app_db, mode)
    before = snapshot(app_db)
    with app_db.engine.connect() as conn:
        with conn.begin() as tx:
            legacy_id = insert_cashout(conn)
            r = a.create_transaction(
                "WALLET_CASHOUT", 21, "30.00", "EUR", legacy_entity_id=legacy_id, connection=conn
            )
            assert r.overall_success
            tx.rollback()
    assert snapshot(app_db) == before


def test_postgresql_writes_legacy_values_in_the_one_statement_create(app_db: Database) -> None:
    if app_db.backend != "postgres":
        pytest.skip("the one-statement create needs data-modifying CTEs")
    a = adapter_in(app_db, M.DUAL_WRITE_LEGACY_PRIMARY)
    calls: list[dict[str, Any]] = []
    create_dual = a.hot.create_dual

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(kw)
        return create_dual(*args, **kw)

    a.hot.create_dual = spy  # type: ignore[method-assign]
    values = {"priority": 2, "destination": "d"}
    r = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values=values)
    assert r.overall_success
    assert calls == [{"keyed": False, "extra": ("priority", "destination")}]
    assert cashout(app_db, r.legacy_entity_id or 0) == {
        "status": "PENDING",
        "destination": "d",
        "priority": 2,
    }


# --- columns the database fills, and enum types ------------------------------------------


@pytest.fixture
def generated_db(db: Database) -> Iterator[Database]:
    """cashouts with columns the database computes (GENERATED ALWAYS), and on
    PostgreSQL an identity column and an enum-typed column."""
    with db.engine.begin() as conn:
        if db.backend == "postgres":
            conn.exec_driver_sql("CREATE TYPE test_channel AS ENUM ('web', 'mobile', 'branch')")
            conn.exec_driver_sql(
                "ALTER TABLE cashouts "
                "ADD COLUMN amount_cents NUMERIC GENERATED ALWAYS AS (amount * 100) STORED, "
                "ADD COLUMN ref_no BIGINT GENERATED ALWAYS AS IDENTITY, "
                "ADD COLUMN channel test_channel"
            )
        else:
            conn.exec_driver_sql(
                "ALTER TABLE cashouts ADD COLUMN amount_cents NUMERIC "
                "GENERATED ALWAYS AS (amount * 100) VIRTUAL"
            )
    try:
        yield db
    finally:
        if db.backend == "postgres":
            with db.engine.begin() as conn:
                conn.exec_driver_sql(
                    "ALTER TABLE cashouts DROP COLUMN IF EXISTS amount_cents, "
                    "DROP COLUMN IF EXISTS ref_no, DROP COLUMN IF EXISTS channel"
                )
                conn.exec_driver_sql("DROP TYPE IF EXISTS test_channel")


@pytest.mark.parametrize("column", ["amount_cents", "ref_no"])
def test_a_generated_always_column_is_refused_before_anything_is_written(
    generated_db: Database, column: str
) -> None:
    if column == "ref_no" and generated_db.backend != "postgres":
        pytest.skip("SQLite has no identity columns")
    a = adapter_in(generated_db, M.DUAL_WRITE_LEGACY_PRIMARY)
    before = snapshot(generated_db)
    with pytest.raises(InputError, match=rf"cannot set '{column}'.*GENERATED ALWAYS"):
        a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values={column: 5})
    assert snapshot(generated_db) == before
    # Left out, the database fills it.
    r = a.create_transaction("WALLET_CASHOUT", 7, "12.5", "USD")
    assert r.overall_success and r.legacy_entity_id is not None
    cents = count(
        generated_db, "SELECT amount_cents FROM cashouts WHERE id = :i", i=r.legacy_entity_id
    )
    assert cents == 1250


@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.LEGACY_ONLY])
def test_a_postgresql_enum_column_takes_only_its_labels(
    generated_db: Database, mode: DualWriteMode
) -> None:
    if generated_db.backend != "postgres":
        pytest.skip("PostgreSQL's enum types")
    a = adapter_in(generated_db, mode)
    before = snapshot(generated_db)
    with pytest.raises(InputError, match=r"'channel'.*'fax' is not one of .*'web', 'mobile'"):
        a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values={"channel": "fax"})
    assert snapshot(generated_db) == before
    r = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values={"channel": "mobile"})
    assert r.overall_success and r.legacy_entity_id is not None
    with generated_db.engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT channel::text FROM cashouts WHERE id = :i"), {"i": r.legacy_entity_id}
        ).scalar_one()
    assert stored == "mobile"


# --- values JSON has no word for, kept in UNIFIED_ONLY -------------------------------------


def test_unified_only_keeps_a_uuid_an_interval_and_a_nan(db: Database) -> None:
    """Each passes the checks (the dual modes write it), so UNIFIED_ONLY keeps it for the
    replay: the create, its history row and its pending legacy row commit together."""
    if db.backend != "postgres":
        pytest.skip("UUID and INTERVAL columns, and a NaN a DOUBLE PRECISION takes")
    columns = {"ext_ref": "UUID NOT NULL", "wait": "INTERVAL", "rate": "DOUBLE PRECISION"}
    values = {"ext_ref": uuid.uuid4(), "wait": timedelta(days=-1, microseconds=7)}
    with legacy_columns(db, columns):
        a = adapter_in(db, M.UNIFIED_ONLY)
        with db.app_engine.connect() as conn, conn.begin():
            r = a.create_transaction(
                "WALLET_CASHOUT",
                7,
                "1",
                "USD",
                legacy_values={**values, "rate": float("nan")},
                connection=conn,
            )
        assert r.overall_success and r.legacy_entity_id is None
        assert count(db, "SELECT count(*) FROM unistatus_pending_legacy") == 1
        with db.engine.connect() as conn:
            meta = conn.execute(
                sa.select(status_history.c.meta).where(
                    status_history.c.transaction_id == r.entity_id
                )
            ).scalar_one()
        kept = meta["unistatus.legacy_values"]
        assert set(kept) == {"ext_ref", "wait", "rate"}
        assert kept["ext_ref"] == str(values["ext_ref"])


@pytest.mark.parametrize("mode", [M.UNIFIED_ONLY, M.DUAL_WRITE_LEGACY_PRIMARY])
@pytest.mark.parametrize(
    "value",
    [{"a": Decimal("1.5")}, {"a": {1, 2}}, {"a": [uuid.UUID(int=1)]}, {"a": float("inf")}],
    ids=["decimal", "set", "uuid", "infinity"],
)
def test_a_json_value_that_is_not_json_is_refused_before_anything_is_written(
    db: Database, mode: DualWriteMode, value: dict[str, Any]
) -> None:
    with legacy_columns(db, {"extras": "JSON"}):
        a = adapter_in(db, mode)
        before = snapshot(db)
        with db.app_engine.connect() as conn, conn.begin():
            with pytest.raises(InputError, match=r"legacy_values\['extras'\].*JSON"):
                a.create_transaction(
                    "WALLET_CASHOUT",
                    7,
                    "1",
                    "USD",
                    legacy_values={"extras": value},
                    connection=conn,
                )
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1  # still usable
        with pytest.raises(InputError, match=r"legacy_values\['extras'\].*JSON"):
            a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values={"extras": value})
        assert snapshot(db) == before


def test_linking_compares_legacy_values_as_the_database_does(db: Database) -> None:
    """A CHAR(4) holds 'AB' padded ('AB  ' on PostgreSQL), which the database says
    equals 'AB': the link is taken; a value it does not hold is still refused."""
    with legacy_columns(db, {"branch": "CHAR(4) NOT NULL"}):
        a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
        with db.app_engine.connect() as conn, conn.begin():
            legacy_id = conn.execute(
                sa.text(
                    "INSERT INTO cashouts (user_id, amount, currency, status, branch, "
                    "created_at, updated_at) VALUES (1, 5, 'USD', 'PENDING', 'AB', :now, :now) "
                    "RETURNING id"
                ),
                {"now": NOW},
            ).scalar_one()
            link = partial(
                a.create_transaction,
                "WALLET_CASHOUT",
                1,
                "5",
                "USD",
                legacy_entity_id=legacy_id,
                connection=conn,
            )
            with pytest.raises(InputError, match=r"exists with branch='AB *', not 'AC'"):
                link(legacy_values={"branch": "AC"})
            assert link(legacy_values={"branch": "AB"}).overall_success


@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.LEGACY_ONLY])
def test_a_value_the_columns_type_refuses_is_bad_input_not_a_failure(
    db: Database, mode: DualWriteMode
) -> None:
    """A type the adapter cannot judge in Python (``inet``; ``real``, whose range a
    Python float passes) is judged by the database before anything is written: an
    InputError naming the column, nothing written, no failure counted. The database
    refused it during the write instead: a failure, in the error rate the gates and the
    rollback alert read (exploratory review)."""
    if db.backend != "postgres":
        pytest.skip("PostgreSQL's inet and real types")
    with legacy_columns(db, {"client_ip": "INET", "score": "REAL"}):
        a = adapter_in(db, mode)
        events: list[Any] = []
        a.observers.append(events.append)
        before = snapshot(db)
        cases = [({"client_ip": "not-an-ip"}, "client_ip"), ({"score": 1e39}, "score")]
        cases.append(({"client_ip": 5}, "client_ip"))  # no cast from an integer
        for bad, column in cases:
            with pytest.raises(InputError, match=column) as refused:
                a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values=bad)
            assert not isinstance(refused.value, CallerWriteRefusedError)
            with db.app_engine.connect() as conn, conn.begin():
                with pytest.raises(InputError, match=column):
                    a.create_transaction(
                        "WALLET_CASHOUT", 7, "1", "USD", legacy_values=bad, connection=conn
                    )
                conn.execute(sa.text("SELECT 1"))  # the caller's transaction still usable
        assert snapshot(db) == before
        assert all(e.success or e.refused for e in events)
        good = {"client_ip": "10.0.0.1", "score": 0.5}
        made = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values=good)
        assert made.overall_success, made.as_dict()


@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.UNIFIED_ONLY])
def test_a_time_with_an_offset_for_a_column_without_one_is_stored_as_its_utc_time(
    db: Database, mode: DualWriteMode
) -> None:
    """12:00+05:00 for a ``TIMESTAMP`` (no time zone) column was stored as 07:00 on
    PostgreSQL (the session's UTC) and as 12:00 on SQLite (the offset dropped): the
    same call stored another time on each backend (a probe). Both store its UTC time
    now, a rollback's replay too."""
    with legacy_columns(db, {"due_at": "TIMESTAMP"}):
        if mode is M.UNIFIED_ONLY:
            for _ in range(4):
                phases.advance(db.engine, db.settings, actor="t", force=True, reason="t")
        a = adapter_in(db, mode)
        due = datetime(2026, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=5)))
        made = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values={"due_at": due})
        assert made.overall_success, made.as_dict()
        if mode is M.UNIFIED_ONLY:  # the rollback's replay creates the legacy row
            rollback.rollback_current_phase(db.engine, db.settings, actor="t", reason="t")
        with db.engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT due_at FROM cashouts")).scalar_one()
        assert str(stored)[:19] == "2026-01-02 07:00:00", stored


def test_a_time_whose_utc_time_is_past_the_calendar_is_bad_input(db: Database) -> None:
    """9999-12-31 22:00-05:00 is 10000-01-01 in UTC, which Python cannot hold: its
    conversion raised OverflowError out of the create (a review). Bad input now."""
    with legacy_columns(db, {"due_at": "TIMESTAMP"}):
        a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
        due = datetime(9999, 12, 31, 22, 0, tzinfo=timezone(timedelta(hours=-5)))
        with pytest.raises(InputError, match="due_at"):
            a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", legacy_values={"due_at": due})
