"""Transactions acknowledged without a legacy row: creates in DUAL_WRITE_UNIFIED_PRIMARY
under ``primary_wins`` whose legacy INSERT an application's trigger refused (unified row
and history committed, ``legacy_id`` NULL, queued in ``unistatus_repair_queue``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in
from support.blocking import wait_until_it_blocks
from support.phases import to_phase
from support.refusing import refusing_inserts
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.migration import repair_entity
from unistatus.migration.repair import run_repair
from unistatus.migration.repair_report import RepairReport

MARKED = 4242  # a user whose legacy INSERTs the application's trigger refuses


def refused_creates(
    db: Database, *users: int, legacy_values: dict[str, Any] | None = None
) -> tuple[DualWriteAdapter, str, list[str]]:
    """Phase 3 (DUAL_WRITE_UNIFIED_PRIMARY), an adapter under ``primary_wins``, one cashout
    made on both sides (user 1), then one per user of ``users`` (default: MARKED) whose
    legacy INSERT was refused: (the adapter, the whole one's id, the refused ones' ids)."""
    users = users or (MARKED,)
    to_phase(db.engine, 3)
    a = adapter_in(db, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, fallback="primary_wins")
    values = legacy_values or {}
    whole = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", legacy_values=values)
    assert whole.overall_success and whole.legacy_entity_id is not None
    with refusing_inserts(db, "cashouts", *users):
        made = [
            a.create_transaction("WALLET_CASHOUT", u, "99", "USD", legacy_values=values)
            for u in users
        ]
    for r in made:
        assert r.overall_success and not r.secondary_success and r.legacy_entity_id is None
    return a, str(whole.entity_id), [str(r.entity_id) for r in made]


def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    """The rows ``sql`` (text, ``:name`` parameters, our tables named bare) selects."""
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params).all())


def unified(db: Database, utx: str) -> Any:
    """The transaction's unified row: status, legacy_status, legacy_id, version."""
    (row,) = rows(
        db,
        "SELECT status, legacy_status, legacy_id, version FROM unified_transactions WHERE id = :e",
        e=utx,
    )
    return row


def open_queue(db: Database) -> list[Any]:
    """The open repair-queue rows (transaction_id, legacy_id), oldest first."""
    return rows(
        db,
        "SELECT transaction_id, legacy_id FROM unistatus_repair_queue "
        "WHERE resolved_at IS NULL ORDER BY id",
    )


def repair_racing(
    db: Database, monkeypatch: pytest.MonkeyPatch, other: Callable[[], Any]
) -> tuple[RepairReport, Any]:
    """``unistatus repair`` (unified_wins) creating a missing legacy row while ``other``
    runs (PostgreSQL): once the repair has inserted the first legacy row and linked its
    unified row, ``other`` starts in a thread, and the repair commits only when ``other``
    waits for one of the rows it holds (so ``other`` read the entity before the link
    committed). (the repair's report, what ``other`` returned); what it raised is raised."""
    create = repair_entity.create_legacy_rows
    out: dict[str, Any] = {}

    def run_other() -> None:
        try:
            out["result"] = other()
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread
            out["error"] = exc

    threads: list[threading.Thread] = []

    def linked_then_held(conn: sa.Connection, *args: Any, **kw: Any) -> Any:
        made = create(conn, *args, **kw)
        if not threads:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            threads.append(threading.Thread(target=run_other))
            threads[0].start()
            assert wait_until_it_blocks(db.engine, pid), "the other never waited for the repair"
        return made

    monkeypatch.setattr(repair_entity, "create_legacy_rows", linked_then_held)
    try:
        report = run_repair(db.engine, db.settings, strategy="unified_wins", reason="INC-9")
    finally:
        for t in threads:
            t.join(60)
        monkeypatch.setattr(repair_entity, "create_legacy_rows", create)
    assert threads, "the repair created no legacy row"
    if "error" in out:
        raise out["error"]
    return report, out["result"]
