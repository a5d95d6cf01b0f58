"""``legacy_values`` of a create in UNIFIED_ONLY, kept as JSON until the rollback's replay.

UNIFIED_ONLY writes no legacy row: the replay creates it later, and a legacy table with
required columns of the application's own needs their values then. They are kept in the
create's first history row (its ``metadata``, under :data:`KEPT_KEY`), as strict JSON
(what PostgreSQL's ``json`` takes): a Decimal, a date, a time, a UUID, an interval
(``timedelta``), bytes or a float JSON has no number for (NaN, infinities) as text,
turned back into the type the column has when the replay reads them (:func:`from_json`).

Every value the checks take is either kept or refused here, by :func:`to_json`, which
runs before anything is written (:class:`unistatus.adapter.create.NewTransaction`): a
value that failed only once the unified row was in would leave a transaction whose
legacy row the replay can never make.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from unistatus.domain.inputs import LegacyColumn, shown
from unistatus.errors import InputError

__all__ = ["KEPT_KEY", "from_json", "to_json"]

# The history row's metadata key; refused in a create's own metadata.
KEPT_KEY = "unistatus.legacy_values"
# An interval as ISO 8601 (which PostgreSQL reads too): timedelta's own normal form,
# days (may be negative), then seconds and microseconds (never negative).
_INTERVAL = re.compile(r"P(-?[0-9]+)DT([0-9]+)\.([0-9]{6})S")


def to_json(values: Mapping[str, Any]) -> dict[str, Any]:
    """Checked ``legacy_values`` as strict JSON values (see the module); InputError
    naming a value that has no such form (an object of a type unistatus does not know,
    a JSON column's value holding one, or NaN)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        kept = _to_json(value)
        try:
            json.dumps(kept, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InputError(
                f"legacy_values[{name!r}] {shown(value)} cannot be kept as JSON for the "
                f"rollback's replay ({exc}): pass a value of the column's own type"
            ) from None
        out[name] = kept
    return out


def _to_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # nan, inf, -inf: float() reads them back
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"P{value.days}DT{value.seconds}.{value.microseconds:06d}S"
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def from_json(kept: object, columns: Mapping[str, LegacyColumn]) -> dict[str, Any]:
    """Kept values back in the types of ``columns`` (the table as the replay reflects
    it); a column gone since is kept as it is, for the checks to refuse by name.
    InputError when a value cannot be read back."""
    if not isinstance(kept, dict):
        raise InputError(f"the kept legacy_values are not a JSON object: {kept!r}")
    out: dict[str, Any] = {}
    for name, value in kept.items():
        column = columns.get(name)
        kind = column.python_type if column is not None else None
        try:
            out[name] = _from_json(value, kind)
        except (ValueError, InvalidOperation, TypeError):
            raise InputError(
                f"the kept legacy_values[{name!r}] {value!r} is not a {kind.__name__ if kind else 'value'} "
                "the column takes any more"
            ) from None
    return out


def _from_json(value: Any, kind: type[Any] | None) -> Any:
    if not isinstance(value, str) or kind is None or kind is str:
        return value
    if kind is Decimal:
        return Decimal(value)
    if kind is float:
        return float(value)
    if kind is datetime:
        return datetime.fromisoformat(value)
    if kind is date:
        return date.fromisoformat(value)
    if kind is time:
        return time.fromisoformat(value)
    if kind is timedelta:
        return _interval(value)
    if kind is uuid.UUID:
        return uuid.UUID(value)
    if kind is bytes:
        return base64.b64decode(value.encode("ascii"), validate=True)
    return value


def _interval(text: str) -> timedelta:
    found = _INTERVAL.fullmatch(text)
    if found is None:
        raise ValueError(f"not an interval: {text!r}")
    days, seconds, micro = (int(part) for part in found.groups())
    return timedelta(days=days, seconds=seconds, microseconds=micro)
