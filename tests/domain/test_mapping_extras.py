"""Extra legacy values (docs/status-model.md, "Extra legacy values"): a deployment's own
values beyond the 38, registered once per process, answered by every part of the mapping
(Python and generated SQL); the reverse stays canonical.

The conftest restores the registration after each test.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from unistatus.domain.mapping import (
    LegacyStatusMapper,
    check_extra_statuses,
    compatible_clause,
    compatible_pairs,
    extra_statuses,
    forward_case,
    mapping_rows,
    register_extra_statuses,
    reverse_case,
)
from unistatus.domain.statuses import LegacySystemType, UnifiedTransactionType
from unistatus.domain.statuses import UnifiedTransactionStatus as U
from unistatus.errors import ConfigError, UnmappableStatusError

C = LegacySystemType.CASHOUT
REFUND = {"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}}
mapper = LegacyStatusMapper()


def _sql(expr: sa.ColumnElement[Any]) -> Any:
    """Evaluate a generated expression in a real database (SQLite in memory)."""
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        return conn.execute(sa.select(expr)).scalar_one()


def test_an_unregistered_value_is_unmappable() -> None:
    assert mapper.try_to_unified(C, "REFUND_REQUESTED") is None
    with pytest.raises(UnmappableStatusError):
        mapper.to_unified(C, "REFUND_REQUESTED")
    assert _sql(forward_case(C, sa.literal("REFUND_REQUESTED"))) is None
    assert extra_statuses() == {s: {} for s in LegacySystemType}


def test_a_registered_value_is_answered_everywhere() -> None:
    assert register_extra_statuses(REFUND) == {C: {"REFUND_REQUESTED": "CANCELLED"}}
    assert mapper.to_unified(C, "REFUND_REQUESTED") is U.CANCELLED
    assert mapper.try_to_unified(C, "REFUND_REQUESTED") is U.CANCELLED
    assert mapper.is_legacy_status(C, "REFUND_REQUESTED")
    assert "REFUND_REQUESTED" in mapper.legacy_statuses("cashouts")
    assert mapper.forward_table(C)["REFUND_REQUESTED"] == "CANCELLED"
    assert mapper.is_compatible(C, "REFUND_REQUESTED", "CANCELLED")
    assert not mapper.is_compatible(C, "REFUND_REQUESTED", "FAILED")
    # Only its own system: an escrow knows no REFUND_REQUESTED.
    assert mapper.try_to_unified(LegacySystemType.ESCROW, "REFUND_REQUESTED") is None
    # The generated SQL holds it (backfill, quarantine retry, check, capture triggers).
    assert _sql(forward_case(C, sa.literal("REFUND_REQUESTED"))) == "CANCELLED"
    assert _sql(forward_case(C, sa.literal("refund_requested"))) is None
    assert ("REFUND_REQUESTED", "CANCELLED") in compatible_pairs(C)
    ok = compatible_clause(C, sa.literal("REFUND_REQUESTED"), sa.literal("CANCELLED"))
    bad = compatible_clause(C, sa.literal("REFUND_REQUESTED"), sa.literal("FAILED"))
    assert _sql(ok) == 1 and _sql(bad) == 0
    rows = [r for r in mapping_rows() if r["origin"] == "extra"]
    assert rows == [
        {
            "system": "CASHOUT",
            "legacy": "REFUND_REQUESTED",
            "unified": "CANCELLED",
            "origin": "extra",
        }
    ]
    assert len(mapping_rows()) == 39
    assert extra_statuses()[C] == {"REFUND_REQUESTED": "CANCELLED"}


def test_the_reverse_stays_canonical() -> None:
    register_extra_statuses(REFUND)
    cashout = UnifiedTransactionType.WALLET_CASHOUT
    assert mapper.to_legacy(cashout, U.CANCELLED) == "CANCELLED"
    assert mapper.reverse_table(cashout)["CANCELLED"] == "CANCELLED"
    assert _sql(reverse_case(cashout, sa.literal("CANCELLED"))) == "CANCELLED"
    # A row already holding the extra value keeps it when its status is written again.
    assert mapper.to_legacy(cashout, U.CANCELLED, current="REFUND_REQUESTED") == (
        "REFUND_REQUESTED"
    )
    assert mapper.to_legacy(cashout, U.FAILED, current="REFUND_REQUESTED") == "FAILED"


def test_validation_counts_and_lists_the_extra_values() -> None:
    register_extra_statuses({**REFUND, "escrows": {"ON_HOLD": "DISPUTED"}})
    report = mapper.validate()
    assert report.ok, report.problems
    data = report.as_dict()
    assert data["total_legacy"] == data["total_mapped"] == 40
    assert data["legacy"]["CASHOUT"] == {"statuses": 15, "mapped": 15}
    assert data["extra"] == [
        {"system": "CASHOUT", "legacy": "REFUND_REQUESTED", "unified": "CANCELLED"},
        {"system": "ESCROW", "legacy": "ON_HOLD", "unified": "DISPUTED"},
    ]


def test_registering_again_is_idempotent_and_a_conflict_is_refused_whole() -> None:
    register_extra_statuses(REFUND)
    before = extra_statuses()
    register_extra_statuses(REFUND)
    assert extra_statuses() == before
    # One good value and one conflicting: neither is registered.
    conflict = {"CASHOUT": {"ON_HOLD": "ADMIN_PENDING", "REFUND_REQUESTED": "FAILED"}}
    with pytest.raises(ConfigError, match="already mapped to CANCELLED in this process"):
        register_extra_statuses(conflict)
    assert extra_statuses() == before
    assert mapper.to_unified(C, "REFUND_REQUESTED") is U.CANCELLED


@pytest.mark.parametrize(
    ("extras", "message"),
    [
        ({"CASHOUT": {"REFUND_REQUESTED": "REFUNDED"}}, "unknown unified status 'REFUNDED'"),
        ({"CASHOUT": {"REFUND_REQUESTED": "cancelled"}}, "unknown unified status 'cancelled'"),
        ({"CASHOUT": {"CANCELLED": "FAILED"}}, "already a legacy value of CASHOUT"),
        ({"CASHOUT": {"COMPLETED": "SUCCESS"}}, "already a legacy value of CASHOUT"),
        ({"CASHOUT": {"refund_requested": "CANCELLED"}}, "is not upper case"),
        ({"CASHOUT": {"Refund": "CANCELLED"}}, "is not upper case"),
        ({"CASHOUT": {"": "CANCELLED"}}, "must be 1-64 characters"),
        ({"CASHOUT": {"ON HOLD": "CANCELLED"}}, "must be 1-64 characters"),
        ({"CASHOUT": {"X" * 65: "CANCELLED"}}, "must be 1-64 characters"),
        ({"PAYROLL": {"X": "CANCELLED"}}, "unknown legacy system 'PAYROLL'"),
        ({"CASHOUT": {"X": "CANCELLED"}, "cashouts": {"X": "FAILED"}}, "mapped twice"),
        ({"ESCROW": {"ON_HOLD": "OTP_PENDING"}}, "not a status of ESCROW transactions"),
        ({"ESCROW": {"AWAITING_APPROVAL": "FUNDS_HELD"}}, "also a unified status of ESCROW"),
        ({"CASHOUT": "CANCELLED"}, "expected a table"),
    ],
)
def test_a_bad_extra_value_is_a_clear_error_and_registers_nothing(
    extras: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_extra_statuses(extras)
    with pytest.raises(ConfigError, match=message):
        register_extra_statuses({"EXCHANGE": {"ON_HOLD": "ADMIN_PENDING"}, **extras})
    assert extra_statuses() == {s: {} for s in LegacySystemType}


def test_a_value_spelled_like_its_own_unified_status_is_accepted() -> None:
    # An escrow application that added RELEASE_PENDING: the same word on both sides.
    register_extra_statuses({"ESCROW": {"RELEASE_PENDING": "RELEASE_PENDING"}})
    escrow = UnifiedTransactionType.ESCROW
    assert mapper.to_unified("ESCROW", "RELEASE_PENDING") is U.RELEASE_PENDING
    assert mapper.to_legacy(escrow, U.RELEASE_PENDING) == "ACTIVE"  # canonical stays
    assert mapper.to_legacy(escrow, U.RELEASE_PENDING, current="RELEASE_PENDING") == (
        "RELEASE_PENDING"
    )
