"""The legacy rows the capture's statements work on (:class:`Rows`), and, for an UPDATE,
which of the columns unistatus keeps (:data:`KEPT`) the statement changed in each row.

A bypass UPDATE is mirrored by what it changed, not by the whole legacy row: where legacy
is behind unified on purpose (UNIFIED_ONLY, or a ``primary_wins`` write whose legacy side
failed), a column the statement did not touch holds a stale value, and taking it would
undo a committed change and its pending replay (docs/capture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from unistatus.db.legacy import DATA_COLUMNS, LEGACY_COLUMNS, LegacyTable

__all__ = ["CHANGEABLE", "KEPT", "Rows", "changed_flag"]

# What unistatus keeps of a legacy row (the unified row's image of it; the times are not).
KEPT = ("id", "status", *DATA_COLUMNS)
# The kept columns an UPDATE's rows say, each, whether the statement changed.
CHANGEABLE = tuple(name for name in KEPT if name != "id")


def changed_flag(name: str) -> str:
    """The column of an UPDATE's rows that says whether the statement changed ``name``."""
    return f"changed_{name}"


@dataclass(frozen=True)
class Rows:
    """Legacy rows to work on: ``c`` has every LEGACY_COLUMNS name.

    ``flagged``: an UPDATE's rows (:meth:`changed_from`), which also have, per
    :data:`CHANGEABLE` name, :func:`changed_flag` (whether the statement changed it in
    that row). Other rows (an INSERT's, the catch-up's) are taken whole.
    """

    rows: sa.Subquery
    flagged: bool = False

    @property
    def c(self) -> Any:
        return self.rows.c

    @classmethod
    def of(cls, columns: dict[str, sa.ColumnElement[Any]], *froms: Any) -> Rows:
        """From expressions for each LEGACY_COLUMNS name (and the FROM clause they need)."""
        select = sa.select(*(columns[name].label(name) for name in LEGACY_COLUMNS))
        if froms:
            select = select.select_from(*froms)
        return cls(select.subquery("capture_rows"))

    @classmethod
    def of_table(cls, lt: LegacyTable, source: Any = None) -> Rows:
        """The rows of the legacy table itself (``source``: the table joined to what
        selects them; default, every row)."""
        return cls.of(
            {name: lt.read(name) for name in LEGACY_COLUMNS},
            lt.table if source is None else source,
        )

    def changed_from(self, old: Rows) -> Rows:
        """An UPDATE's new rows, each with what the statement changed in it: per kept
        column, whether it differs from the row of the same id before (``old``; a row
        whose id changed has none: all changed). A row that changed none of them is left
        out: no change at all."""
        before = old.rows.alias("capture_before")
        # The id with "=" (a bulk UPDATE's rows are hashed on it), the rest NULL-safe.
        new_id = before.c.id.is_(None)
        differs = {n: before.c[n].is_distinct_from(self.c[n]) for n in CHANGEABLE}
        select = (
            sa.select(
                *self.c, *(sa.or_(new_id, d).label(changed_flag(n)) for n, d in differs.items())
            )
            .select_from(self.rows.outerjoin(before, before.c.id == self.c.id))
            .where(sa.or_(new_id, *differs.values()))
        )
        return Rows(select.subquery("capture_changed"), flagged=True)
