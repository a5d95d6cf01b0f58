"""The spec's consistency rule as SQL over one pair of legacy and unified rows.

:func:`rule` writes it over the two sides' columns (:class:`Rule`): what
:mod:`unistatus.migration.check_sql` counts per key range and the bench's raw
statements sum. It mirrors :func:`unistatus.domain.consistency.compare` (a test holds
the two to the same answers). docs/check.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from unistatus.db.legacy import DATA_COLUMNS
from unistatus.domain.amount_text import text_no_number
from unistatus.domain.consistency import InconsistencyKind
from unistatus.domain.mapping import LegacyStatusMapper, compatible_clause
from unistatus.domain.statuses import LegacySystemType

__all__ = ["KINDS", "STATUS_KINDS", "Rule", "rule"]

# The kinds of a pair, then missing_legacy: a unified row no legacy key points at (its
# legacy INSERT refused, queued), counted apart from the pairs and never by the rule.
KINDS = tuple(k.value for k in InconsistencyKind)
_mapper = LegacyStatusMapper()

# The kinds judged on the legacy status exclude each other (unmappable: no mapping;
# mismatch: mappable, not compatible; drift: compatible, the exact copy stale), so one CASE
# names which of them a pair has (:attr:`Rule.verdict`): the status is judged once per pair,
# where one flag per kind judged it three times (its mapping looked up three times, the
# pair twice). PostgreSQL, 500k rows: one system's counting statement 210 -> 185 ms
# (BENCHMARKS.md, "Session of 2026-12-05 (3)").
STATUS_KINDS = (
    str(InconsistencyKind.UNMAPPABLE_LEGACY),
    str(InconsistencyKind.STATUS_MISMATCH),
    str(InconsistencyKind.LEGACY_STATUS_DRIFT),
)


@dataclass(frozen=True)
class Rule:
    """The spec's consistency rule over one pair of rows, as SQL (:func:`rule`).

    ``plain``: one flag each for the kinds judged on their own (missing, orphan, fields);
    ``verdict``: which of :data:`STATUS_KINDS` the pair has, as its position + 1 (0: none).
    """

    plain: dict[str, sa.ColumnElement[bool]]
    verdict: sa.ColumnElement[int]

    @property
    def flags(self) -> dict[str, sa.ColumnElement[bool]]:
        """One boolean per kind, in :data:`KINDS` order (the status kinds each compare the
        verdict: for a few pairs, not for counting a range)."""
        status = {kind: self.verdict == n for n, kind in enumerate(STATUS_KINDS, 1)}
        no = sa.false()  # a kind the rule never gives a pair (missing_legacy)
        return {kind: self.plain.get(kind, status.get(kind, no)) for kind in KINDS}

    def any(self) -> sa.ColumnElement[bool]:
        """The pair is inconsistent (of any kind)."""
        return sa.or_(*self.plain.values(), self.verdict != 0)

    def columns(self) -> list[sa.ColumnElement[Any]]:
        """The rule as the columns a statement selects (or groups by) to tell the kinds:
        read back by :meth:`kinds`."""
        cols: list[sa.ColumnElement[Any]] = [
            _as_int(flag).label(f"f_{kind}") for kind, flag in self.plain.items()
        ]
        return [*cols, self.verdict.label("f_status")]

    def kinds(self, row: Mapping[Any, Any]) -> tuple[str, ...]:
        """The kinds of a row selected with :meth:`columns`, in :data:`KINDS` order."""
        verdict = int(row["f_status"] or 0)
        status = STATUS_KINDS[verdict - 1] if verdict else None
        return tuple(k for k in KINDS if k == status or (k in self.plain and row[f"f_{k}"]))


def rule(
    system: LegacySystemType,
    l: Mapping[str, sa.ColumnElement[Any]],  # noqa: E741 - the spec's names
    u: Mapping[str, sa.ColumnElement[Any]],
    *,
    text_amounts: bool = True,
) -> Rule:
    """The spec's consistency rule over the pair of columns ``l`` and ``u``.

    ``text_amounts``: whether an amount of either side may be text that only the stored
    value tells (SQLite keeps text in any column); False where the columns' types say it
    cannot (PostgreSQL: a text amount is read as a number before, ``as_copied``), which
    spares the per-row test.

    ``l`` and ``u`` map ``id``, ``status`` and the DATA_COLUMNS (``u`` also
    ``legacy_status``) to the two sides' columns (NULL ``id`` = that side is absent; ``u``
    rows must all point at a legacy row, rows born unified are no orphans). Each
    expression is never NULL, so ``CASE WHEN`` and ``NOT`` mean what they say, and the
    rule mirrors :func:`unistatus.domain.consistency.compare` clause by clause.
    """
    has_l, has_u = l["id"].is_not(None), u["id"].is_not(None)
    known = list(_mapper.forward_table(system))

    def differs(name: str) -> sa.ColumnElement[bool]:
        # As in compare: an amount is compared as a number, and NULL, or text that is
        # no plain decimal (SQLite would read '1e3' as 1000 beside a NUMERIC), equals
        # nothing.
        if name == "amount":
            texts = (text_no_number(l[name]), text_no_number(u[name])) if text_amounts else ()
            return sa.or_(l[name].is_(None), u[name].is_(None), *texts, l[name] != u[name])
        return l[name].is_distinct_from(u[name])

    plain = {
        str(InconsistencyKind.MISSING_UNIFIED): sa.and_(has_l, u["id"].is_(None)),
        str(InconsistencyKind.ORPHAN_UNIFIED): sa.and_(l["id"].is_(None), has_u),
        str(InconsistencyKind.FIELD_MISMATCH): sa.and_(
            has_l, has_u, sa.or_(*(differs(name) for name in DATA_COLUMNS))
        ),
    }
    verdict = sa.case(
        (l["id"].is_(None), 0),
        (sa.or_(l["status"].is_(None), l["status"].not_in(known)), 1),  # unmappable
        (u["id"].is_(None), 0),
        (sa.not_(compatible_clause(system, l["status"], u["status"])), 2),  # mismatch
        (l["status"].is_distinct_from(u["legacy_status"]), 3),  # drift
        else_=0,
    )
    return Rule(plain, verdict)


def _as_int(cond: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.case((cond, 1), else_=0)
