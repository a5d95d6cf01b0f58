"""``legacy_values`` of a create in UNIFIED_ONLY, kept as JSON until the rollback's replay.

UNIFIED_ONLY writes no legacy row: the replay creates it later, and a legacy table with
required columns of the application's own needs their values then. They are kept in the
create's first history row (its ``metadata``, under :data:`KEPT_KEY`), as JSON: a
Decimal, a date, a time or bytes as text, turned back into the type the column has when
the replay reads them (:func:`from_json`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from unistatus.domain.inputs import LegacyColumn
from unistatus.errors import InputError

__all__ = ["KEPT_KEY", "from_json", "to_json"]

# The history row's metadata key; refused in a create's own metadata.
KEPT_KEY = "unistatus.legacy_values"


def to_json(values: Mapping[str, Any]) -> dict[str, Any]:
    """Checked ``legacy_values`` as JSON values (see the module)."""
    return {name: _to_json(value) for name, value in values.items()}


def _to_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
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
    if kind is datetime:
        return datetime.fromisoformat(value)
    if kind is date:
        return date.fromisoformat(value)
    if kind is time:
        return time.fromisoformat(value)
    if kind is bytes:
        return base64.b64decode(value.encode("ascii"), validate=True)
    return value
