"""When a legacy row and its unified row agree: the spec's rule, in one place.

The adapter's single-entity ``check_consistency`` uses :func:`compare`; the bulk check
(``unistatus check``) expresses the same rule in SQL with
:func:`unistatus.domain.mapping.compatible_clause`. A test holds the two to the same answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from unistatus.domain.amount_text import is_number_text
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import LegacySystemType


class InconsistencyKind(StrEnum):
    MISSING_UNIFIED = "missing_unified"
    ORPHAN_UNIFIED = "orphan_unified"
    STATUS_MISMATCH = "status_mismatch"
    FIELD_MISMATCH = "field_mismatch"
    UNMAPPABLE_LEGACY = "unmappable_legacy"
    # The statuses agree, but the unified row's image of the legacy status
    # (``legacy_status``) is not the legacy row's: a legacy-only change that kept the
    # unified status (exchange CREATED -> RATE_LOCKED). The undo of the retirement
    # refills legacy from that image, so it must be exact.
    LEGACY_STATUS_DRIFT = "legacy_status_drift"
    # A unified row acknowledged without its legacy row (its create's legacy INSERT
    # refused under ``primary_wins``, queued for repair): not a pair to compare, so
    # :func:`compare` never finds it; ``check`` and the adapter's ``check_consistency``
    # read it from the repair queue (``unistatus.db.queued_legacy``).
    MISSING_LEGACY = "missing_legacy"


SHARED_FIELDS = ("user_id", "amount", "currency")


def same_value(name: str, a: Any, b: Any) -> bool:
    """Whether two values of the shared field ``name`` agree: the amount as a number
    (``10.5`` and ``10.50`` agree; a missing amount, or text that is no plain decimal,
    agrees with nothing), the rest as equal."""
    if name == "amount":
        if _bytes(a) or _bytes(b):
            return False  # SQLite keeps a BLOB in any column: bytes are no amount
        if a is None or b is None:
            return False
        if _no_number(a) or _no_number(b):
            # '1e3', '1_000': Decimal reads 1000, the copyable rule no amount (and the
            # check's SQL, by the same rule: unistatus.migration.check_rule).
            return False
        try:
            return Decimal(a) == Decimal(b)
        except InvalidOperation:
            return False  # a text column's 'abc': the check's SQL reads it as no amount
    return bool(a == b)


def _no_number(value: Any) -> bool:
    return isinstance(value, str) and not is_number_text(value)


def _bytes(value: Any) -> bool:
    return isinstance(value, bytes | bytearray | memoryview)


def shown_value(value: Any) -> Any:
    """A compared value as JSON takes it: a Decimal as its exact text; bytes (a BLOB
    SQLite keeps in any column) as their SQL literal, ``X'50454E44494E47'``, as the
    quarantine shows them (``backfill.statements.quarantined_raw``)."""
    if isinstance(value, Decimal):
        return str(value)
    if _bytes(value):
        return "X'" + bytes(value).hex().upper() + "'"
    return value


@dataclass(frozen=True)
class Inconsistency:
    kind: InconsistencyKind
    system: str
    legacy_id: int | None
    transaction_id: str | None
    field: str | None = None
    legacy_value: Any = None
    unified_value: Any = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        for key in ("legacy_value", "unified_value"):
            d[key] = shown_value(d[key])
        return d


_mapper = LegacyStatusMapper()


def compare(
    system: LegacySystemType,
    legacy: Mapping[str, Any] | None,
    unified: Mapping[str, Any] | None,
) -> list[Inconsistency]:
    """Every way ``legacy`` and ``unified`` disagree (empty list: consistent).

    Rows are mappings with ``id``, ``status``, ``user_id``, ``amount``, ``currency``;
    the unified one also ``legacy_id`` and ``legacy_status`` (its image of the legacy
    status; a missing key reads as NULL). Either may be None (absent).
    """
    lid = legacy["id"] if legacy else (unified.get("legacy_id") if unified else None)
    uid = unified["id"] if unified else None

    def found(kind: InconsistencyKind, **kw: Any) -> Inconsistency:
        return Inconsistency(kind, system.value, lid, uid, **kw)

    if legacy is None:
        if unified is not None and unified.get("legacy_id") is not None:
            return [found(InconsistencyKind.ORPHAN_UNIFIED)]
        return []
    out: list[Inconsistency] = []
    if _mapper.try_to_unified(system, legacy["status"]) is None:
        out.append(
            found(
                InconsistencyKind.UNMAPPABLE_LEGACY,
                field="status",
                legacy_value=legacy["status"],
                unified_value=unified["status"] if unified is not None else None,
            )
        )
    if unified is None:
        out.append(found(InconsistencyKind.MISSING_UNIFIED))
        return out
    if not out and not _mapper.is_compatible(system, legacy["status"], unified["status"]):
        out.append(
            found(
                InconsistencyKind.STATUS_MISMATCH,
                field="status",
                legacy_value=legacy["status"],
                unified_value=unified["status"],
            )
        )
    elif not out and unified.get("legacy_status") != legacy["status"]:
        out.append(
            found(
                InconsistencyKind.LEGACY_STATUS_DRIFT,
                field="legacy_status",
                legacy_value=legacy["status"],
                unified_value=unified.get("legacy_status"),
            )
        )
    for name in SHARED_FIELDS:
        lv, uv = legacy[name], unified[name]
        if not same_value(name, lv, uv):
            out.append(
                found(
                    InconsistencyKind.FIELD_MISMATCH, field=name, legacy_value=lv, unified_value=uv
                )
            )
    return out
