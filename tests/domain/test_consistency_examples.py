"""What a check's example of an unmappable legacy row says of its unified side."""

from __future__ import annotations

from decimal import Decimal

from unistatus.domain.consistency import InconsistencyKind, compare
from unistatus.domain.statuses import LegacySystemType

LEGACY = {"id": 7, "status": "REFUND_REQUESTED", "user_id": 1, "amount": Decimal("5"),
          "currency": "USD"}  # fmt: skip
UNIFIED = {"id": "UTX1", "legacy_id": 7, "status": "CANCELLED", "legacy_status": "CANCELLED",
           "user_id": 1, "amount": Decimal("5"), "currency": "USD"}  # fmt: skip


def test_an_unmappable_legacy_status_shows_the_unified_status_beside_it() -> None:
    """`check` printed "unmappable_legacy status: 'REFUND_REQUESTED' vs None" (and
    `"unified_value": null` in its JSON) while the unified row held CANCELLED, which
    `--out` did show (exploratory docs review)."""
    found = compare(LegacySystemType.CASHOUT, LEGACY, UNIFIED)
    unmappable = [i for i in found if i.kind is InconsistencyKind.UNMAPPABLE_LEGACY]
    assert [(i.legacy_value, i.unified_value) for i in unmappable] == [
        ("REFUND_REQUESTED", "CANCELLED")
    ]


def test_without_a_unified_row_it_shows_none() -> None:
    found = compare(LegacySystemType.CASHOUT, LEGACY, None)
    unmappable = [i for i in found if i.kind is InconsistencyKind.UNMAPPABLE_LEGACY]
    assert [(i.legacy_value, i.unified_value) for i in unmappable] == [("REFUND_REQUESTED", None)]
