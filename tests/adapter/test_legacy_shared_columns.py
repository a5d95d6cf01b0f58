"""The deployment's own legacy columns for the fields both sides carry.

``user_id``, ``amount`` and ``currency`` go into the legacy row as well as the unified one,
and a deployment's legacy table may be narrower than the unified limits (BIGINT,
NUMERIC(20, 8), ten characters): an ``integer`` owner, a ``varchar(3)`` currency, an
amount of two decimals. A value that does not fit is the caller's error, refused before
anything is written in every mode (UNIFIED_ONLY too: a rollback's replay writes it into
legacy later), never a database failure counted against the error rate, and never
rounded silently into a legacy row that then differs from its unified row.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from typing import Any

import pytest

from conftest import Database
from support.adapters import snapshot
from support.legacy_columns import (
    narrow_payouts,
    payouts_rows,
    refused_alone_and_in_callers_transaction,
)
from support.legacy_columns import payouts_adapter as adapter
from unistatus import DualWriteMode, InputError
from unistatus.adapter.model import OperationEvent
from unistatus.config import Settings

M = DualWriteMode


@pytest.fixture
def payouts(db: Database) -> Iterator[Settings]:
    with narrow_payouts(db) as settings:
        yield settings


OUT_OF_RANGE = 3_000_000_000  # past a 4-byte INTEGER (SQLite's INTEGER holds 8 bytes)
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"currency": "USDT"}, r"currency.*'payouts'.*'currency'.*too long.*at most 3"),
    ({"amount": "0.001"}, r"amount.*'payouts'.*'amount'.*0\.001.*more than 2 decimal"),
    ({"amount": "12345678901"}, r"amount.*'payouts'.*'amount'.*NUMERIC\(12, 2\)"),
]
GOOD: dict[str, Any] = {"user_id": 7, "amount": "12.50", "currency": "USD"}


@pytest.mark.parametrize("mode", list(DualWriteMode), ids=lambda m: m.value)
@pytest.mark.parametrize(("given", "message"), REFUSED)
def test_a_value_past_the_legacy_column_is_refused_before_anything_is_written(
    db: Database, payouts: Settings, mode: DualWriteMode, given: dict[str, Any], message: str
) -> None:
    a = adapter(db, payouts, mode)
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    write = partial(a.create_transaction, "WALLET_CASHOUT", **{**GOOD, **given})
    refused_alone_and_in_callers_transaction(db, write, InputError, message)
    assert [e for e in events if not e.success] == []


@pytest.mark.parametrize("mode", list(DualWriteMode), ids=lambda m: m.value)
def test_a_user_id_past_a_four_byte_owner_column_is_refused(
    db: Database, payouts: Settings, mode: DualWriteMode
) -> None:
    a = adapter(db, payouts, mode)
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    before = snapshot(db), payouts_rows(db)
    given = {**GOOD, "user_id": OUT_OF_RANGE}
    if db.backend == "sqlite":  # an 8-byte INTEGER holds it
        assert a.create_transaction("WALLET_CASHOUT", **given).overall_success
        return
    with pytest.raises(InputError, match=r"user_id.*'payouts'.*'owner_id'.*out of range for INT"):
        a.create_transaction("WALLET_CASHOUT", **given)
    assert (snapshot(db), payouts_rows(db)) == before
    assert [e for e in events if not e.success] == []


@pytest.mark.parametrize("mode", list(DualWriteMode), ids=lambda m: m.value)
def test_values_that_fit_the_narrow_columns_are_written(
    db: Database, payouts: Settings, mode: DualWriteMode
) -> None:
    a = adapter(db, payouts, mode)
    edge = {"user_id": 2**31 - 1, "amount": Decimal("99999.99"), "currency": "EUR"}
    r = a.create_transaction("WALLET_CASHOUT", **edge)
    assert r.overall_success and not r.has_inconsistency
    if mode.writes_legacy and mode.writes_unified:
        assert a.check_consistency(r.entity_id)["consistent"] is True
