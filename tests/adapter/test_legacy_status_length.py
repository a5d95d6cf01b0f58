"""A legacy status value longer than the legacy status column (``varchar(20)``).

The mapping writes legacy values of up to 25 characters (``PENDING_ADDRESS_CONFIG``: 22);
a deployment's status column may be narrower. Such a write is the caller's request
refused, before anything is written, in every mode (UNIFIED_ONLY too: a rollback's
replay writes it into legacy later), in the caller's transaction as well: never a
database failure (PostgreSQL's ``value too long``) counted against the error rate that
the gate into phase 4 and the rollback alert read.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from conftest import Database
from support.legacy_columns import (
    narrow_payouts,
    refused_alone_and_in_callers_transaction,
)
from support.legacy_columns import payouts_adapter as adapter
from unistatus import DualWriteMode, WriteRefusedError
from unistatus.adapter.model import OperationEvent
from unistatus.config import Settings

GOOD: dict[str, Any] = {"user_id": 7, "amount": "12.50", "currency": "USD"}
TOO_LONG = "PENDING_ADDRESS_CONFIG"  # 22 characters, a CASHOUT status (ADMIN_PENDING)
MESSAGE = r"'payouts'.*'status'.*20 characters.*'PENDING_ADDRESS_CONFIG'.*22"


@pytest.fixture
def payouts(db: Database) -> Iterator[Settings]:
    """PostgreSQL's: SQLite stores any text in a VARCHAR(20) (see the SQLite test)."""
    if db.backend == "sqlite":
        pytest.skip("SQLite holds a value of any length: nothing to refuse")
    with narrow_payouts(db, status="VARCHAR(20)") as settings:
        yield settings


def only_refused(events: list[OperationEvent]) -> None:
    """Every event of the refused writes is a refusal: nothing in the error rate."""
    assert events
    assert all(e.refused and e.success and not e.outcome_unknown for e in events), events


@pytest.mark.parametrize("mode", list(DualWriteMode), ids=lambda m: m.value)
def test_a_change_to_a_status_past_the_column_is_refused_before_anything_is_written(
    db: Database, payouts: Settings, mode: DualWriteMode
) -> None:
    a = adapter(db, payouts, mode)
    created = a.create_transaction("WALLET_CASHOUT", **GOOD)
    assert created.overall_success
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    write = partial(a.update_status, created.entity_id, TOO_LONG, reason="r", triggered_by="t")
    refused_alone_and_in_callers_transaction(db, write, WriteRefusedError, MESSAGE)
    only_refused(events)


@pytest.mark.parametrize("mode", list(DualWriteMode), ids=lambda m: m.value)
def test_a_create_in_a_status_past_the_column_is_refused_before_anything_is_written(
    db: Database, payouts: Settings, mode: DualWriteMode
) -> None:
    a = adapter(db, payouts, mode)
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    write = partial(a.create_transaction, "WALLET_CASHOUT", **GOOD, status=TOO_LONG)
    refused_alone_and_in_callers_transaction(db, write, WriteRefusedError, MESSAGE)
    only_refused(events)


@pytest.mark.parametrize("mode", list(DualWriteMode), ids=lambda m: m.value)
def test_a_status_that_fits_the_column_exactly_is_written(
    db: Database, payouts: Settings, mode: DualWriteMode
) -> None:
    a = adapter(db, payouts, mode)
    created = a.create_transaction("WALLET_CASHOUT", **GOOD)
    fits = "USER_CONFIRM_PENDING"  # 20 characters
    r = a.update_status(created.entity_id, fits, reason="r", triggered_by="t")
    assert r.overall_success and r.legacy_status == fits


def test_sqlite_stores_a_status_past_the_declared_length(sqlite_db: Database) -> None:
    """SQLite holds any text in a VARCHAR(20): the application's own writes store such
    a value, and so do the adapter's (a refusal there refused what the database takes)."""
    with narrow_payouts(sqlite_db, status="VARCHAR(20)") as settings:
        a = adapter(sqlite_db, settings, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
        created = a.create_transaction("WALLET_CASHOUT", **GOOD)
        r = a.update_status(created.entity_id, TOO_LONG, reason="r", triggered_by="t")
        assert r.overall_success and r.legacy_status == TOO_LONG
        a.close()


def test_a_column_widened_after_the_adapter_started_takes_the_write_at_once(
    pg: Database,
) -> None:
    """The refusal tells the operator to widen the column: the adapter, which reflected it
    at start, then took the write only after a restart. A refusal reflects it again."""
    with narrow_payouts(pg, status="VARCHAR(20)") as settings:
        a = adapter(pg, settings, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
        created = a.create_transaction("WALLET_CASHOUT", **GOOD)
        with pytest.raises(WriteRefusedError, match=MESSAGE):
            a.update_status(created.entity_id, TOO_LONG, reason="r", triggered_by="t")
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE payouts ALTER COLUMN status TYPE VARCHAR(32)")
        r = a.update_status(created.entity_id, TOO_LONG, reason="r", triggered_by="t")
        assert r.overall_success and r.legacy_status == TOO_LONG
        a.close()
