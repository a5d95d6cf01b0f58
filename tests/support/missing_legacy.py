"""Transactions acknowledged without a legacy row: creates in DUAL_WRITE_UNIFIED_PRIMARY
under ``primary_wins`` whose legacy INSERT an application's trigger refused (unified row
and history committed, ``legacy_id`` NULL, queued in ``unistatus_repair_queue``)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in
from support.phases import to_phase
from support.refusing import refusing_inserts
from unistatus import DualWriteAdapter, DualWriteMode

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


def open_queue(db: Database) -> list[Any]:
    """The open repair-queue rows (transaction_id, legacy_id), oldest first."""
    return rows(
        db,
        "SELECT transaction_id, legacy_id FROM unistatus_repair_queue "
        "WHERE resolved_at IS NULL ORDER BY id",
    )
