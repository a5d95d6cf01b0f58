"""Changing a transaction acknowledged without its legacy row, under ``primary_wins``.

A create in DUAL_WRITE_UNIFIED_PRIMARY whose legacy INSERT the database refused was
acknowledged (``primary_wins``): the application goes on with that payment. Its later
status changes in that mode are acknowledged the same way, as any write whose legacy
side failed: unified and history written as for a whole transaction, the legacy side
(there is no row to write) queued for repair, as a refused UPDATE is. A rollback then
creates the legacy row with the newest status. Under ``strict`` the change is refused
with a typed error and nothing is written; where legacy is primary it stays refused.
A change racing ``unistatus repair``'s creation of the legacy row (it read the row
missing, then waited for the unified row the repair links) writes that legacy row.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import Database
from support.adapters import snapshot
from support.missing_legacy import (
    MARKED,
    open_queue,
    refused_creates,
    repair_racing,
    rows,
    unified,
)
from support.phases import to_phase
from unistatus import DualWriteAdapter, DualWriteMode, DualWriteResult
from unistatus.db.control import set_mode
from unistatus.errors import ModeError
from unistatus.migration.check import run_check
from unistatus.migration.rollback import emergency_rollback

M = DualWriteMode


def changes(db: Database, utx: str) -> list[tuple[Any, ...]]:
    """The history of ``utx`` as a write records it (ids and times left out)."""
    return [
        tuple(r)
        for r in rows(
            db,
            "SELECT from_status, to_status, from_legacy_status, to_legacy_status, reason, "
            "triggered_by, mode, override FROM unified_status_history "
            "WHERE transaction_id = :e ORDER BY id",
            e=utx,
        )
    ]


def assert_acknowledged_and_queued(result: Any) -> None:
    """As ``primary_wins`` reports a write whose legacy side failed."""
    assert result.overall_success and result.primary_success
    assert not result.secondary_success and result.has_inconsistency
    assert "legacy row" in (result.error or "")
    assert result.legacy_entity_id is None


def test_changes_are_acknowledged_queued_and_reach_legacy_at_the_rollback(db: Database) -> None:
    a, whole, (utx,) = refused_creates(db)
    for status, reason in (("PROCESSING", "sent"), ("SUCCESS", "paid")):
        assert a.update_status(whole, status, reason, "app").overall_success
        assert_acknowledged_and_queued(a.update_status(utx, status, reason, "app"))
    # Unified and its history exactly as for the transaction written on both sides.
    assert tuple(unified(db, utx))[:2] == tuple(unified(db, whole))[:2] == ("SUCCESS", "SUCCESS")
    assert unified(db, utx).version == unified(db, whole).version == 3
    assert unified(db, utx).legacy_id is None
    assert changes(db, utx)[1:] == changes(db, whole)[1:]
    assert [c[:2] for c in changes(db, utx)] == [
        (None, "PENDING"),
        ("PENDING", "PROCESSING"),
        ("PROCESSING", "SUCCESS"),
    ]
    status, meta = a.get_transaction_status(utx)
    assert status is not None and status.value == "SUCCESS" and meta["source"] == "unified"
    # Queued as a refused UPDATE is (one row per refused write), and still one missing
    # legacy row for check.
    assert [tuple(q) for q in open_queue(db)] == [(utx, None)] * 3
    report = run_check(db.engine, db.settings)
    assert report.inconsistencies["missing_legacy"] == 1
    assert report.consistent == 1 < report.total
    # The rollback creates the legacy row with the newest status: nothing acknowledged lost.
    out = emergency_rollback(db.engine, db.settings, actor="oncall", reason="unified incident")
    assert (out["replay"]["legacy_created"], out["conflicts"]) == (1, 0)
    after = unified(db, utx)
    assert (after.status, after.legacy_status) == ("SUCCESS", "SUCCESS")
    (legacy,) = rows(db, "SELECT user_id, status FROM cashouts WHERE id = :i", i=after.legacy_id)
    assert tuple(legacy) == (MARKED, "SUCCESS")
    assert open_queue(db) == []
    report = run_check(db.engine, db.settings)
    assert report.consistent == report.total == 2


def test_the_history_row_says_legacy_refused_the_change(db: Database) -> None:
    """Each acknowledged change's history row says its legacy side was refused (no row
    to write) and queued; a change legacy took says nothing of the kind."""
    a, whole, (utx,) = refused_creates(db)
    assert_acknowledged_and_queued(a.update_status(utx, "PROCESSING", "sent", "app"))
    assert a.update_status(whole, "PROCESSING", "sent", "app").overall_success
    sql = "SELECT metadata FROM unified_status_history WHERE transaction_id = :e ORDER BY id"

    def metas(e: str) -> list[Any]:  # after the create's (SQLite's JSON is text)
        return [json.loads(m) if isinstance(m, str) else m for (m,) in rows(db, sql, e=e)[1:]]

    (meta,) = metas(utx)
    mark = (meta or {}).get("unistatus") or {}
    assert mark.get("flag") == "legacy_refused", meta
    assert mark["repair_queued"] is True and "no legacy row" in mark["legacy_error"]
    assert metas(whole) == [None]


def test_strict_refuses_with_a_typed_error_and_writes_nothing(db: Database) -> None:
    _, _, (utx,) = refused_creates(db)
    strict = DualWriteAdapter(db.engine, settings=db.settings)  # the default fallback
    assert strict.fallback == "strict"
    before = snapshot(db)
    with pytest.raises(ModeError, match="has no legacy row"):
        strict.update_status(utx, "PROCESSING", "sent", "app")
    assert snapshot(db) == before


def test_in_the_callers_transaction(db: Database) -> None:
    """Acknowledged and queued in the caller's transaction, which goes on and commits
    it with the rest; rolled back, nothing of it is left."""
    a, whole, (utx,) = refused_creates(db)
    before = snapshot(db)
    with db.engine.connect() as conn:
        with conn.begin() as tx:
            r = a.update_status(utx, "PROCESSING", "sent", "app", connection=conn)
            assert_acknowledged_and_queued(r)
            tx.rollback()
    assert snapshot(db) == before
    with db.engine.connect() as conn, conn.begin():
        r = a.update_status(utx, "PROCESSING", "sent", "app", connection=conn)
        assert_acknowledged_and_queued(r)
        # The caller's transaction goes on: its next write is whole.
        other = a.update_status(whole, "PROCESSING", "sent", "app", connection=conn)
        assert other.overall_success and not other.has_inconsistency
    assert tuple(unified(db, utx))[:2] == ("PROCESSING", "EXECUTING")
    assert changes(db, utx)[1:] == changes(db, whole)[1:]
    assert [tuple(q) for q in open_queue(db)] == [(utx, None)] * 2


def test_strict_in_the_callers_transaction_refuses_before_writing(db: Database) -> None:
    _, whole, (utx,) = refused_creates(db)
    strict = DualWriteAdapter(db.engine, settings=db.settings, fallback="strict")
    with db.engine.connect() as conn, conn.begin():
        with pytest.raises(ModeError, match="has no legacy row"):
            strict.update_status(utx, "PROCESSING", "sent", "app", connection=conn)
        # Refused before the first write: the caller's transaction goes on.
        ok = strict.update_status(whole, "PROCESSING", "sent", "app", connection=conn)
        assert ok.overall_success
    assert unified(db, utx).status == "PENDING" and len(changes(db, utx)) == 1


def test_legacy_primary_refuses_the_change(db: Database) -> None:
    """DUAL_WRITE_LEGACY_PRIMARY is not entered while such a row is open, even by force;
    put there all the same (the phase written as a rollback writes it), the change
    cannot be made without its primary side: refused, nothing written."""
    _, _, (utx,) = refused_creates(db)
    with pytest.raises(ModeError, match="not in legacy"):
        set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t", force=True)
    to_phase(db.engine, 2)
    a = DualWriteAdapter(db.engine, settings=db.settings, fallback="primary_wins")
    assert a.mode is M.DUAL_WRITE_LEGACY_PRIMARY
    before = snapshot(db)
    with pytest.raises(ModeError, match="has no legacy row"):
        a.update_status(utx, "PROCESSING", "sent", "app")
    assert snapshot(db) == before


@pytest.mark.parametrize("where", ["pooled", "callers_transaction"])
def test_a_change_racing_the_repair_writes_the_legacy_row_it_created(
    pg: Database, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """PostgreSQL (SQLite's writers take the whole database first): the change looked
    the transaction's legacy id up (none) before the repair that creates its legacy row
    committed, and locked the unified row after. It writes both sides, as for any
    transaction with a legacy row: nothing queued, the legacy row at the new status."""
    db = pg
    a, whole, (utx,) = refused_creates(db)

    def change() -> DualWriteResult:
        if where == "pooled":
            return a.update_status(utx, "PROCESSING", "sent", "app")
        with db.engine.connect() as conn, conn.begin():
            return a.update_status(utx, "PROCESSING", "sent", "app", connection=conn)

    done, r = repair_racing(db, monkeypatch, change)
    assert r.overall_success and r.secondary_success and not r.has_inconsistency, r.error
    assert (done.repaired, done.failed, done.skipped) == (1, 0, {})
    after = unified(db, utx)
    assert r.legacy_entity_id == after.legacy_id is not None
    assert (after.status, after.legacy_status) == ("PROCESSING", "EXECUTING")
    (legacy,) = rows(db, "SELECT status FROM cashouts WHERE id = :i", i=after.legacy_id)
    assert legacy.status == "EXECUTING"
    assert open_queue(db) == []
    report = run_check(db.engine, db.settings)
    assert report.consistent == report.total == 2


def test_check_consistency_reports_the_missing_legacy_row(db: Database) -> None:
    """``check_consistency`` of a transaction acknowledged without its legacy row says
    what ``check`` says of it (``missing_legacy``), in the caller's transaction too; once
    the rollback created the row, consistent."""
    a, whole, (utx,) = refused_creates(db)
    assert a.check_consistency(whole)["consistent"]
    found = a.check_consistency(utx)
    assert not found["consistent"]
    assert [i["kind"] for i in found["inconsistencies"]] == ["missing_legacy"]
    (missing,) = found["inconsistencies"]
    assert (missing["system"], missing["transaction_id"], missing["legacy_id"]) == (
        "CASHOUT",
        utx,
        None,
    )
    with db.engine.connect() as conn, conn.begin():
        assert not a.check_consistency(utx, connection=conn)["consistent"]
    emergency_rollback(db.engine, db.settings, actor="oncall", reason="unified incident")
    a.modes.refresh()
    assert a.check_consistency(utx)["consistent"]
