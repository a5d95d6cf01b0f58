"""``primary_wins`` on creates (issue 12 section 2).

A unified insert the database refuses (a trigger of the test's own, for one marked
user) must not cost the new transaction its legacy row in DUAL_WRITE_LEGACY_PRIMARY:
the legacy row commits, the entity is queued for repair and the result says
``has_inconsistency``. Under ``strict`` nothing is written. Also in a caller's
transaction (a savepoint on the caller's connection).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in, snapshot
from support.refusing import refused, refusing_inserts
from unistatus import CallerTransactionError, DualWriteMode
from unistatus.db.tables import status_history
from unistatus.migration.repair import run_repair

M = DualWriteMode
MARKED_USER = 4242


@pytest.fixture
def refusing(db: Database) -> Iterator[Database]:
    """unified_transactions refuses an INSERT for MARKED_USER."""
    with refusing_inserts(db, "unified_transactions", MARKED_USER):
        yield db


def rows(db: Database, table: str, where: str = "", **params: Any) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT * FROM {table} {where}"), params)
        return [dict(r._mapping) for r in found]


def assert_primary_won(db: Database, result: Any) -> None:
    assert result.primary_success and not result.secondary_success
    assert result.has_inconsistency
    assert "t_refuse_unified_transactions" in (result.error or "")
    assert result.legacy_entity_id is not None
    legacy = rows(db, "cashouts", "WHERE id = :i", i=result.legacy_entity_id)
    assert [r["status"] for r in legacy] == ["PENDING"]
    assert rows(db, "unified_transactions") == []
    assert rows(db, "unified_status_history") == []
    queued = rows(db, "unistatus_repair_queue")
    assert [(q["transaction_id"], q["legacy_id"]) for q in queued] == [
        (result.entity_id, result.legacy_entity_id)
    ]


def test_the_legacy_row_commits_and_is_queued_for_repair(refusing: Database) -> None:
    a = adapter_in(refusing, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="primary_wins")
    r = a.create_transaction("WALLET_CASHOUT", MARKED_USER, "10", "USD")
    assert_primary_won(refusing, r)
    # Others are unaffected, and the repair brings the marked one in step once it can.
    assert a.create_transaction("WALLET_CASHOUT", 1, "10", "USD").overall_success
    with refusing.engine.begin() as conn:
        drop = "DROP TRIGGER IF EXISTS t_refuse_unified_transactions"
        conn.exec_driver_sql(
            drop + (" ON unified_transactions" if refusing.backend == "postgres" else "")
        )
    run_repair(refusing.engine, refusing.settings, strategy="legacy_wins", reason="test")
    assert a.check_consistency(r.entity_id)["consistent"] is True


def test_with_legacy_values_too(refusing: Database) -> None:
    a = adapter_in(refusing, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="primary_wins")
    # No extra column on this table: an empty legacy_values is the plain create.
    r = a.create_transaction("WALLET_CASHOUT", MARKED_USER, "10", "USD", legacy_values={})
    assert_primary_won(refusing, r)


def test_strict_writes_nothing(refusing: Database) -> None:
    a = adapter_in(refusing, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="strict")
    before = snapshot(refusing)
    create = partial(a.create_transaction, "WALLET_CASHOUT", MARKED_USER, "10", "USD")
    assert "t_refuse_unified" in refused(create, rule=True)  # a trigger's: a rule
    assert snapshot(refusing) == before


def test_unified_primary_fails_when_its_primary_is_refused(refusing: Database) -> None:
    """In DUAL_WRITE_UNIFIED_PRIMARY the unified insert is the primary: nothing commits."""
    a = adapter_in(refusing, M.DUAL_WRITE_UNIFIED_PRIMARY, fallback="primary_wins")
    before = snapshot(refusing)
    create = partial(a.create_transaction, "WALLET_CASHOUT", MARKED_USER, "10", "USD")
    assert "t_refuse_unified" in refused(create, rule=True)  # a trigger's: a rule
    assert snapshot(refusing) == before


def test_in_the_callers_transaction_a_savepoint_keeps_it_usable(refusing: Database) -> None:
    a = adapter_in(refusing, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="primary_wins")
    with refusing.engine.connect() as conn, conn.begin():
        r = a.create_transaction("WALLET_CASHOUT", MARKED_USER, "10", "USD", connection=conn)
        # The caller's transaction goes on after the refused savepoint.
        other = a.create_transaction("WALLET_CASHOUT", 1, "10", "USD", connection=conn)
        assert other.overall_success and not other.has_inconsistency
    assert_primary_won_with(refusing, r, other_unified=1)


def test_in_the_callers_transaction_rolled_back_leaves_nothing(refusing: Database) -> None:
    a = adapter_in(refusing, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="primary_wins")
    before = snapshot(refusing)
    with refusing.engine.connect() as conn:
        with conn.begin() as tx:
            r = a.create_transaction("WALLET_CASHOUT", MARKED_USER, "10", "USD", connection=conn)
            assert r.has_inconsistency
            tx.rollback()
    assert snapshot(refusing) == before


def test_strict_in_the_callers_transaction_raises(refusing: Database) -> None:
    a = adapter_in(refusing, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="strict")
    with refusing.engine.connect() as conn, conn.begin() as tx:
        with pytest.raises(CallerTransactionError, match="t_refuse_unified"):
            a.create_transaction("WALLET_CASHOUT", MARKED_USER, "10", "USD", connection=conn)
        tx.rollback()


def assert_primary_won_with(db: Database, result: Any, *, other_unified: int) -> None:
    assert result.primary_success and result.has_inconsistency
    assert len(rows(db, "cashouts")) == 1 + other_unified
    assert len(rows(db, "unified_transactions")) == other_unified
    queued = rows(db, "unistatus_repair_queue")
    assert [q["transaction_id"] for q in queued] == [result.entity_id]


def test_postgresql_tries_the_one_statement_create_in_a_savepoint(refusing: Database) -> None:
    if refusing.backend != "postgres":
        pytest.skip("the one-statement create needs data-modifying CTEs")
    a = adapter_in(refusing, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="primary_wins")
    calls: list[Any] = []
    create_dual = a.hot.create_dual

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        return create_dual(*args, **kw)

    a.hot.create_dual = spy  # type: ignore[method-assign]
    ok = a.create_transaction("WALLET_CASHOUT", 1, "10", "USD")
    assert ok.overall_success and not ok.has_inconsistency and len(calls) == 1
    refused = a.create_transaction("WALLET_CASHOUT", MARKED_USER, "10", "USD")
    assert refused.has_inconsistency and len(calls) == 2  # then the locked path
    assert len(rows(refusing, "cashouts")) == 2
    assert len(rows(refusing, "unified_transactions")) == 1


# --- DUAL_WRITE_UNIFIED_PRIMARY: the legacy insert is the secondary side ------------------


@pytest.fixture
def refusing_legacy(db: Database) -> Iterator[Database]:
    """cashouts refuses an INSERT for MARKED_USER."""
    with refusing_inserts(db, "cashouts", MARKED_USER):
        yield db


def assert_unified_won(db: Database, result: Any, *, others: int = 0) -> None:
    """The unified row and its history committed without a legacy row, queued."""
    assert result.primary_success and not result.secondary_success
    assert result.has_inconsistency and result.overall_success  # as primary_wins reports
    assert "t_refuse_cashouts" in (result.error or "")
    assert result.legacy_entity_id is None and result.entity_id is not None
    assert len(rows(db, "cashouts")) == others
    (unified,) = rows(db, "unified_transactions", "WHERE id = :i", i=result.entity_id)
    assert (unified["status"], unified["legacy_id"], unified["user_id"]) == (
        "PENDING",
        None,
        MARKED_USER,
    )
    history = rows(db, "unified_status_history", "WHERE transaction_id = :i", i=result.entity_id)
    assert [(h["from_status"], h["to_status"]) for h in history] == [(None, "PENDING")]
    queued = rows(db, "unistatus_repair_queue")
    assert [(q["transaction_id"], q["legacy_id"]) for q in queued] == [(result.entity_id, None)]
    assert "t_refuse_cashouts" in queued[0]["error"]


def test_unified_primary_commits_the_unified_row_and_queues_a_repair(
    refusing_legacy: Database,
) -> None:
    db = refusing_legacy
    a = adapter_in(db, M.DUAL_WRITE_UNIFIED_PRIMARY, fallback="primary_wins")
    r = a.create_transaction("WALLET_CASHOUT", MARKED_USER, "10", "USD")
    assert_unified_won(db, r)
    status, meta = a.get_transaction_status(r.entity_id)
    assert status is not None and status.value == "PENDING" and meta["source"] == "unified"
    # Others are unaffected: both sides, ids derived from the legacy row.
    ok = a.create_transaction("WALLET_CASHOUT", 1, "10", "USD")
    assert ok.overall_success and not ok.has_inconsistency and ok.legacy_entity_id is not None
    assert a.check_consistency(ok.entity_id)["consistent"] is True
    # Repair creates the missing legacy row (docs/repair.md), but not while legacy
    # still refuses it: a failure for that entity, kept queued, never closed.
    report = run_repair(db.engine, db.settings, strategy="unified_wins", reason="test")
    assert (report.repaired, report.failed, report.skipped) == (0, 1, {})
    assert [q["resolved_at"] for q in rows(db, "unistatus_repair_queue")] == [None]


def test_unified_primary_marks_the_first_history_row_legacy_refused(
    refusing_legacy: Database,
) -> None:
    """The first history row commits with the unified row, and says the legacy insert
    was refused (queued); the caller's metadata and the kept legacy values beside it."""
    db = refusing_legacy
    a = adapter_in(db, M.DUAL_WRITE_UNIFIED_PRIMARY, fallback="primary_wins")
    r = a.create_transaction(
        "WALLET_CASHOUT", MARKED_USER, "10", "USD", metadata={"ticket": 7}, legacy_values={}
    )
    ok = a.create_transaction("WALLET_CASHOUT", 1, "10", "USD", metadata={"ticket": 8})
    assert_unified_won(db, r, others=1)
    h = status_history
    with db.engine.connect() as conn:
        metas = dict(conn.execute(sa.select(h.c.transaction_id, h.c.meta)).all())
    meta = metas[r.entity_id] or {}
    mark = meta.get("unistatus") or {}
    assert mark.get("flag") == "legacy_refused", meta
    assert mark["repair_queued"] is True and meta["ticket"] == 7
    assert "t_refuse_cashouts" in mark["legacy_error"] and "\n" not in mark["legacy_error"]
    assert metas[ok.entity_id] == {"ticket": 8}  # a create legacy took is not marked


def test_unified_primary_strict_writes_nothing_when_legacy_is_refused(
    refusing_legacy: Database,
) -> None:
    a = adapter_in(refusing_legacy, M.DUAL_WRITE_UNIFIED_PRIMARY, fallback="strict")
    before = snapshot(refusing_legacy)
    create = partial(a.create_transaction, "WALLET_CASHOUT", MARKED_USER, "10", "USD")
    assert "t_refuse_cashouts" in refused(create, rule=True)
    assert snapshot(refusing_legacy) == before


def test_legacy_primary_fails_when_its_primary_is_refused(refusing_legacy: Database) -> None:
    a = adapter_in(refusing_legacy, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="primary_wins")
    before = snapshot(refusing_legacy)
    create = partial(a.create_transaction, "WALLET_CASHOUT", MARKED_USER, "10", "USD")
    assert "t_refuse_cashouts" in refused(create, rule=True)
    assert snapshot(refusing_legacy) == before


def test_unified_primary_in_the_callers_transaction(refusing_legacy: Database) -> None:
    db = refusing_legacy
    a = adapter_in(db, M.DUAL_WRITE_UNIFIED_PRIMARY, fallback="primary_wins")
    with db.engine.connect() as conn, conn.begin():
        r = a.create_transaction("WALLET_CASHOUT", MARKED_USER, "10", "USD", connection=conn)
        # The savepoint rolled back the legacy insert only: the transaction goes on.
        other = a.create_transaction("WALLET_CASHOUT", 1, "10", "USD", connection=conn)
        assert other.overall_success and not other.has_inconsistency
    assert_unified_won(db, r, others=1)
