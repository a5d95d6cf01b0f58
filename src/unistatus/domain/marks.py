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

__all__ = [
    "CAPTURE_KINDS",
    "FLAG_LEGACY_REFUSED",
    "MARKS_KEY",
    "flag_of",
    "imitated_mark",
    "marked",
]

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


def _old_shape(meta: Mapping[str, Any]) -> bool:
    return all(k in meta for k in _OLD_SHAPE) and meta["repair_queued"] is True


def imitated_mark(meta: Mapping[str, Any]) -> str | None:
    """What in a caller's metadata :func:`flag_of` would read as unistatus's, or None.

    The capture's rows are written by SQL (triggers, the quarantine retry), never through
    :func:`unistatus.domain.inputs.check_metadata`, so a top-level ``capture`` of the
    capture's kinds there is only ever a caller imitating one. The old triple is refused
    too: unistatus writes its marks under :data:`MARKS_KEY` since, so a stored row with
    the triple was written by an earlier release (which is what keeps reading it safe)."""
    if meta.get("capture") in CAPTURE_KINDS:
        return f"a top-level 'capture' of {meta['capture']!r} (the capture's own rows)"
    if _old_shape(meta):
        return "'flag', 'legacy_error' and 'repair_queued': true together (unistatus's old marks)"
    return None


def marked(meta: Mapping[str, Any] | None, **marks: Any) -> dict[str, Any]:
    """``meta`` (the caller's, kept as it is) with unistatus's ``marks`` under MARKS_KEY."""
    return {**(meta or {}), MARKS_KEY: dict(marks)}


def flag_of(meta: Any) -> str | None:
    """The flag unistatus set on a history row whose metadata is ``meta``, or None.

    A row marked before the marks had their own key (top-level ``flag:
    legacy_refused`` with ``legacy_error`` and ``repair_queued: true``) still reads as
    marked: only unistatus wrote that triple (a caller's is refused:
    :func:`imitated_mark`), and reading it costs one lookup. A caller's top-level
    ``flag`` alone is the caller's; so is one beside a ``capture`` key, which the
    capture's rows alone have."""
    if not isinstance(meta, dict):
        return None
    marks = meta.get(MARKS_KEY)
    if isinstance(marks, dict):
        flag = marks.get("flag")
    elif meta.get("capture") in CAPTURE_KINDS:
        flag = meta.get("flag")
    elif _old_shape(meta):
        flag = FLAG_LEGACY_REFUSED if meta["flag"] == FLAG_LEGACY_REFUSED else None
    else:
        flag = None
    return None if flag is None else str(flag)
