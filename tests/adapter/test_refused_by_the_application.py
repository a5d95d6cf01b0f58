"""A write the application's own rule refuses in the database (a CHECK constraint, a
trigger raising an exception): the caller's request was refused, not the database
failing. It raises a typed refusal (an InputError: the API answers 409, never a 503 a
client would retry), writes nothing, and is counted refused, never in the error rate
that the gates and the rollback alert read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import Database
from support.adapters import adapter_in
from support.app_triggers import installed
from support.capture_data import history_of, legacy_status, unified_of
from unistatus import DualWriteMode
from unistatus.api.service import create_app
from unistatus.db.retry import refused_by_application
from unistatus.db.tables import unified_transactions as U
from unistatus.errors import (
    CallerTransactionError,
    CallerWriteRefusedError,
    InputError,
    WriteRefusedError,
)

M = DualWriteMode
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODES = [M.LEGACY_ONLY, M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY]


@contextmanager
def no_failed_cashout(db: Database, how: str = "check") -> Iterator[None]:
    """The application's rule: a cashout never goes FAILED (a CHECK constraint, or a
    trigger raising an exception; SQLite: a trigger's RAISE(ABORT))."""
    if db.backend == "sqlite":
        add = [
            "CREATE TRIGGER t_no_failed BEFORE UPDATE ON cashouts WHEN NEW.status = "
            "'FAILED' BEGIN SELECT RAISE(ABORT, 'a cashout is never FAILED'); END"
        ]
        drop = ["DROP TRIGGER t_no_failed"]
    elif how == "check":
        add = ["ALTER TABLE cashouts ADD CONSTRAINT t_no_failed CHECK (status <> 'FAILED')"]
        drop = ["ALTER TABLE cashouts DROP CONSTRAINT t_no_failed"]
    else:
        add = [
            "CREATE FUNCTION t_no_failed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.status = 'FAILED' THEN RAISE EXCEPTION 'a cashout is never FAILED'; "
            "END IF; RETURN NEW; END $$",
            "CREATE TRIGGER t_no_failed BEFORE UPDATE ON cashouts FOR EACH ROW "
            "EXECUTE FUNCTION t_no_failed()",
        ]
        drop = ["DROP TRIGGER t_no_failed ON cashouts", "DROP FUNCTION t_no_failed()"]
    with installed(db, add, drop):
        yield


def state(db: Database, legacy_id: int) -> tuple[Any, ...]:
    u = unified_of(db, "CASHOUT", legacy_id)
    return (
        legacy_status(db, "cashouts", legacy_id),
        None if u is None else (u["status"], u["version"]),
        len(history_of(db, "CASHOUT", legacy_id)),
    )


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_a_change_the_applications_constraint_refuses_is_a_refusal(
    db: Database, mode: DualWriteMode
) -> None:
    a = adapter_in(db, mode)
    events: list[Any] = []
    a.observers.append(events.append)
    c = a.create_transaction("WALLET_CASHOUT", 1, "50", "USD", status="PROCESSING")
    legacy_id = int(c.legacy_entity_id)
    ref = c.entity_id if mode.writes_unified else f"cashout:{legacy_id}"
    before = state(db, legacy_id)
    events.clear()
    with no_failed_cashout(db), pytest.raises(WriteRefusedError) as refused:
        a.update_status(ref, "FAILED", "declined", "ops")
    assert isinstance(refused.value, InputError)
    # The rule's own words: the constraint's name, or the trigger's message.
    assert "t_no_failed" in str(refused.value) or "never FAILED" in str(refused.value)
    assert state(db, legacy_id) == before
    assert [(e.success, e.refused) for e in events] == [(True, True)]
    # The rule does not stop other changes.
    assert a.update_status(ref, "SUCCESS", "paid", "ops").overall_success


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_a_trigger_raising_an_exception_is_a_refusal_too(pg: Database) -> None:
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 1, "50", "USD", status="PROCESSING")
    with no_failed_cashout(pg, how="trigger"), pytest.raises(WriteRefusedError, match="never"):
        a.update_status(c.entity_id, "FAILED", "declined", "ops")


@pytest.mark.parametrize("mode", MODES[1:], ids=lambda m: m.value)
def test_in_the_callers_transaction_it_is_a_refusal_the_caller_rolls_back(
    db: Database, mode: DualWriteMode
) -> None:
    a = adapter_in(db, mode)
    events: list[Any] = []
    a.observers.append(events.append)
    c = a.create_transaction("WALLET_CASHOUT", 1, "50", "USD", status="PROCESSING")
    legacy_id = int(c.legacy_entity_id)
    before = state(db, legacy_id)
    events.clear()
    with no_failed_cashout(db), db.app_engine.connect() as conn:
        conn.begin()
        with pytest.raises(CallerWriteRefusedError, match="roll it back") as refused:
            a.update_status(c.entity_id, "FAILED", "declined", "ops", connection=conn)
        # The caller's transaction to roll back (no InputError: it is not usable).
        assert isinstance(refused.value, CallerTransactionError)
        assert not isinstance(refused.value, InputError)
        conn.rollback()
    assert state(db, legacy_id) == before
    assert [(e.success, e.refused) for e in events] == [(True, True)]


def test_a_constraint_of_unistatus_s_own_tables_is_no_refusal(db: Database) -> None:
    """A violation on unistatus's own tables is unistatus's failure, never the caller's."""
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 1, "50", "USD")
    with db.engine.connect() as conn, pytest.raises(sa.exc.IntegrityError) as taken:
        row = conn.execute(sa.select(U).where(U.c.id == c.entity_id)).one()
        conn.execute(sa.insert(U).values(dict(zip([col.key for col in U.c], row, strict=True))))
    assert not refused_by_application(taken.value)


def test_the_service_answers_409_not_a_503_a_client_would_retry(db: Database) -> None:
    settings = db.settings.model_copy(update={"admin_token": TOKEN})
    with TestClient(create_app(settings, db.engine)) as client:
        made = client.post(
            "/api/v1/transactions",
            json={
                "transaction_type": "WALLET_CASHOUT",
                "user_id": 1,
                "amount": "5",
                "currency": "USD",
            },
            headers=AUTH,
        )
        assert made.status_code in (200, 201), made.text
        ref = f"cashout:{made.json()['legacy_entity_id']}"
        with no_failed_cashout(db):
            r = client.post(
                f"/api/v1/transactions/{ref}/status",
                json={"status": "FAILED", "reason": "declined", "triggered_by": "t"},
                headers=AUTH,
            )
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "WriteRefusedError", r.json()


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_a_rule_that_names_no_table_or_a_psycopg2_caller_is_a_refusal_too(
    pg: Database,
) -> None:
    """A trigger raising a constraint's SQLSTATE (no table in the error's diagnostics),
    and the same refusal on a caller's psycopg2 connection (which says ``pgcode``, not
    ``sqlstate``): both were counted database failures (review)."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 1, "50", "USD", status="PROCESSING")
    with db_rule(pg, "USING ERRCODE = 'check_violation'"):
        with pytest.raises(WriteRefusedError, match="never"):
            a.update_status(c.entity_id, "FAILED", "declined", "ops")
        psycopg2 = sa.create_engine(pg.url.replace("+psycopg:", "+psycopg2:"))
        try:
            with psycopg2.connect() as conn, conn.begin():
                with pytest.raises(CallerWriteRefusedError, match="never"):
                    a.update_status(c.entity_id, "FAILED", "declined", "ops", connection=conn)
        finally:
            psycopg2.dispose()


@contextmanager
def db_rule(db: Database, using: str) -> Iterator[None]:
    """A trigger of the application's raising ``... USING`` ``using`` for FAILED."""
    ddl = [
        "CREATE FUNCTION t_no_failed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.status = 'FAILED' THEN RAISE EXCEPTION 'a cashout is never FAILED' {using};"
        " END IF; RETURN NEW; END $$",
        "CREATE TRIGGER t_no_failed BEFORE UPDATE ON cashouts FOR EACH ROW "
        "EXECUTE FUNCTION t_no_failed()",
    ]
    with installed(
        db, ddl, ["DROP TRIGGER t_no_failed ON cashouts", "DROP FUNCTION t_no_failed()"]
    ):
        yield


def test_sqlite_names_are_matched_whole(sqlite_db: Database) -> None:
    """An application's CHECK named ck_origin_country is not unistatus's ck_origin."""
    with sqlite_db.engine.connect() as conn, pytest.raises(sa.exc.IntegrityError) as refused:
        conn.exec_driver_sql(
            "CREATE TEMP TABLE app_t (x INTEGER CONSTRAINT ck_origin_country CHECK (x > 0))"
        )
        conn.exec_driver_sql("INSERT INTO app_t VALUES (-1)")
    assert refused_by_application(refused.value)


@pytest.mark.parametrize("mode", MODES[1:], ids=lambda m: m.value)
def test_a_caller_that_commits_after_the_refusal_commits_nothing_of_the_change(
    db: Database, mode: DualWriteMode
) -> None:
    """The unified side is written first; the refused legacy side must not leave it in
    the caller's transaction. PostgreSQL aborts that transaction (its COMMIT rolls back);
    SQLite keeps it usable, so a caller that commits anyway (its audit row of the
    refusal, say) committed the unified side alone: the two sides disagreed."""
    a = adapter_in(db, mode)
    c = a.create_transaction("WALLET_CASHOUT", 1, "50", "USD", status="PROCESSING")
    legacy_id = int(c.legacy_entity_id)
    before = state(db, legacy_id)
    with no_failed_cashout(db), db.app_engine.connect() as conn:
        conn.begin()
        with pytest.raises(CallerWriteRefusedError):
            a.update_status(c.entity_id, "FAILED", "declined", "ops", connection=conn)
        try:
            conn.commit()
        except sa.exc.DBAPIError:
            conn.rollback()
    assert state(db, legacy_id) == before
    assert a.check_consistency(c.entity_id)["consistent"]


@pytest.mark.parametrize("mode", MODES[1:], ids=lambda m: m.value)
def test_a_caller_that_commits_after_a_refused_create_commits_nothing_of_it(
    db: Database, mode: DualWriteMode
) -> None:
    """The same for a create whose legacy INSERT the application's rule refuses."""
    a = adapter_in(db, mode)
    if db.backend == "sqlite":
        add = [
            "CREATE TRIGGER t_small BEFORE INSERT ON cashouts WHEN NEW.amount > 1000 "
            "BEGIN SELECT RAISE(ABORT, 'a cashout is small'); END"
        ]
        drop = ["DROP TRIGGER t_small"]
    else:
        add = ["ALTER TABLE cashouts ADD CONSTRAINT t_small CHECK (amount <= 1000)"]
        drop = ["ALTER TABLE cashouts DROP CONSTRAINT t_small"]
    with installed(db, add, drop), db.app_engine.connect() as conn:
        conn.begin()
        with pytest.raises(CallerWriteRefusedError):
            a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD", connection=conn)
        try:
            conn.commit()
        except sa.exc.DBAPIError:
            conn.rollback()
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(U)).scalar_one() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM cashouts").scalar_one() == 0


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_a_data_exception_of_unistatus_s_own_statement_is_a_failure_not_a_refusal(
    pg: Database,
) -> None:
    """A value unistatus's own statement cannot hold (the version's ``+ 1`` past an
    INTEGER) is unistatus failing, counted as such: taking every data exception for the
    caller's value hid it as a refusal (review)."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 1, "50", "USD", status="PROCESSING")
    with pg.engine.begin() as conn:
        conn.execute(sa.update(U).where(U.c.id == c.entity_id).values(version=2**31 - 1))
    result = a.update_status(c.entity_id, "AWAITING_RESPONSE", "sent", "ops")
    assert not result.overall_success and "out of range" in (result.error or "")
