"""What unistatus itself says about a history row, kept apart from the caller's metadata.

A history row's metadata is the caller's (``metadata=`` of a create or a status change).
What unistatus adds to it (a change whose legacy side was refused under ``primary_wins``)
lives under one reserved key, :data:`MARKS_KEY`, never beside the caller's keys: a
caller's own ``flag`` stays the caller's, and is never read as unistatus flagging the
change. A caller may not pass the key (:func:`unistatus.domain.inputs.check_metadata`).

- :func:`marked`: the caller's metadata with unistatus's marks added.
- :func:`flag_of`: the flag unistatus set on a stored row, or None. It also reads the
  rows written before the marks moved under the key, where that is unambiguous (below),
  and the capture's rows, whose metadata is all unistatus's (migration.capture_sql).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CAPTURE_KINDS", "FLAG_LEGACY_REFUSED", "MARKS_KEY", "flag_of", "marked"]

# The reserved metadata key of unistatus's own marks (a JSON object).
MARKS_KEY = "unistatus"
# The flag of a change whose legacy side was refused and queued for repair
# (``primary_wins``, unified primary: docs/adapter.md).
FLAG_LEGACY_REFUSED = "legacy_refused"
# The capture's metadata ``capture`` values: its rows' metadata is built by the capture
# alone (no caller's keys in it), so their top-level ``flag`` is unistatus's.
CAPTURE_KINDS = frozenset({"bypass", "catch_up"})
# The keys a row marked before the marks moved under MARKS_KEY had, all three together.
_OLD_SHAPE = ("flag", "legacy_error", "repair_queued")


def marked(meta: Mapping[str, Any] | None, **marks: Any) -> dict[str, Any]:
    """``meta`` (the caller's, kept as it is) with unistatus's ``marks`` under MARKS_KEY."""
    return {**(meta or {}), MARKS_KEY: dict(marks)}


def flag_of(meta: Any) -> str | None:
    """The flag unistatus set on a history row whose metadata is ``meta``, or None.

    A row marked before the marks had their own key (top-level ``flag:
    legacy_refused`` with ``legacy_error`` and ``repair_queued: true``) still reads as
    marked: only unistatus wrote that triple, and reading it costs one lookup. A
    caller's top-level ``flag`` alone is the caller's."""
    if not isinstance(meta, dict):
        return None
    marks = meta.get(MARKS_KEY)
    if isinstance(marks, dict):
        flag = marks.get("flag")
    elif meta.get("capture") in CAPTURE_KINDS:
        flag = meta.get("flag")
    elif all(k in meta for k in _OLD_SHAPE) and meta["repair_queued"] is True:
        flag = FLAG_LEGACY_REFUSED if meta["flag"] == FLAG_LEGACY_REFUSED else None
    else:
        flag = None
    return None if flag is None else str(flag)
