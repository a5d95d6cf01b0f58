"""The legacy rows the capture's statements work on (:class:`Rows`), and, for an UPDATE,
which of the columns unistatus keeps (:data:`KEPT`) the statement changed in each row.

A statement's rows say which rows it wrote and what it changed in them; their values are
read from the legacy table as it is when the capture runs (:meth:`Rows.as_now`): a trigger
of the application's may have written the row again meanwhile, in a statement nested in
the writer's, whose own capture may run before this one (docs/capture.md).

A bypass UPDATE is mirrored by what it changed, not by the whole legacy row: where legacy
is behind unified on purpose (UNIFIED_ONLY, or a ``primary_wins`` write whose legacy side
failed), a column the statement did not touch holds a stale value, and taking it would
undo a committed change and its pending replay (docs/capture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from unistatus.db.cte_names import cte_name
from unistatus.db.legacy import DATA_COLUMNS, LEGACY_COLUMNS, LegacyTable
from unistatus.db.tables import unified_transactions
from unistatus.domain.mapping import forward_case
from unistatus.domain.statuses import LegacySystemType
from unistatus.domain.transitions import allowed_clause

__all__ = ["CHANGEABLE", "KEPT", "WAS_STATUS", "Rows", "changed_flag", "allowed_in_two_steps"]

# What unistatus keeps of a legacy row (the unified row's image of it; the times are not).
KEPT = ("id", "status", *DATA_COLUMNS)
# The kept columns an UPDATE's rows say, each, whether the statement changed.
CHANGEABLE = tuple(name for name in KEPT if name != "id")


# The column of an UPDATE's rows with the status the statement found (NULL: new id).
WAS_STATUS = "was_status"


def changed_flag(name: str) -> str:
    """The column of an UPDATE's rows that says whether the statement changed ``name``."""
    return f"changed_{name}"


@dataclass(frozen=True)
class Rows:
    """Legacy rows to work on: ``c`` has every LEGACY_COLUMNS name.

    ``flagged``: an UPDATE's rows (:meth:`changed_from`), which also have, per
    :data:`CHANGEABLE` name, :func:`changed_flag` (whether the statement changed it in
    that row), and :data:`WAS_STATUS`. Other rows (an INSERT's, the catch-up's) are taken whole.
    """

    rows: sa.Subquery | sa.CTE
    flagged: bool = False

    @property
    def c(self) -> Any:
        return self.rows.c

    @classmethod
    def of(cls, columns: dict[str, sa.ColumnElement[Any]], *froms: Any, where: Any = None) -> Rows:
        """From expressions for each LEGACY_COLUMNS name (and the FROM clause they need,
        and the condition ``where`` they meet)."""
        select = sa.select(*(columns[name].label(name) for name in LEGACY_COLUMNS))
        if froms:
            select = select.select_from(*froms)
        if where is not None:
            select = select.where(where)
        return cls(select.subquery("capture_rows"))

    @classmethod
    def of_table(cls, lt: LegacyTable, source: Any = None, *, where: Any = None) -> Rows:
        """The rows of the legacy table itself (``source``: the table joined to what
        selects them; default, every row; ``where``: those that meet it)."""
        return cls.of(
            {name: lt.read(name) for name in LEGACY_COLUMNS},
            lt.table if source is None else source,
            where=where,
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
                *self.c,
                *(sa.or_(new_id, d).label(changed_flag(n)) for n, d in differs.items()),
                before.c.status.label(WAS_STATUS),
            )
            .select_from(self.rows.outerjoin(before, before.c.id == self.c.id))
            .where(sa.or_(new_id, *differs.values()))
        )
        return Rows(select.subquery("capture_changed"), flagged=True)

    def gone_from(self, new: Rows) -> Rows:
        """An UPDATE's old rows (these) whose id no new row has: the statement changed
        their id, and the old id is gone from legacy as a DELETE's is."""
        after = new.rows.alias("capture_after")
        kept = sa.exists(sa.select(after.c.id).where(after.c.id == self.c.id))
        return Rows(sa.select(*self.c).where(~kept).subquery("capture_gone"))

    def ids_gone_from(self, new: Rows) -> sa.CompoundSelect[Any]:
        """The ids of these old rows no new row has (:meth:`gone_from`), as ``EXCEPT``:
        the probe PL/pgSQL plans once per session and keeps, made on the session's first
        statement (a one-row one: a NOT EXISTS became a nested loop that compared each
        of a later bulk statement's rows with every other, 45 s for 20,000; found by a
        review); a set operation is never planned so."""
        return sa.select(self.c.id).except_(sa.select(new.c.id))

    def as_now(self, lt: LegacyTable, *, materialized: bool = False) -> Rows:
        """These rows with the values the legacy table holds now (what an UPDATE changed
        in each, :func:`changed_flag`, as the statement changed it). The image a
        statement's trigger is given is the row as that statement left it; a trigger of
        the application's may have written the row again since, in a nested statement
        (captured already, or about to be), and legacy's newest value is the one unified
        must end with, whichever capture runs last. A row gone since (deleted by such a
        statement) is left out: its deletion is captured on its own. One index probe per
        row: the writer holds the row, so no one else can have changed it.

        ``materialized`` (PostgreSQL): a ``MATERIALIZED`` CTE of the statement that reads
        them, so the join of the statement's rows to legacy is made once, however many of
        its parts read them (the judging, the writer's counts, the pre-check): as a
        subquery, each read made it again (a bulk capture joined its 100,000 rows three
        times over, and a one-row capture started three plans for it)."""
        flags = [self.c[changed_flag(n)] for n in CHANGEABLE] if self.flagged else []
        flags += [self.c[WAS_STATUS]] if self.flagged else []
        select = sa.select(
            *(lt.read(name).label(name) for name in LEGACY_COLUMNS), *flags
        ).select_from(self.rows.join(lt.table, lt.id == self.c.id))
        if materialized:
            return Rows(
                select.cte(cte_name("capture_now")).prefix_with("MATERIALIZED"),
                flagged=self.flagged,
            )
        return Rows(select.subquery("capture_now"), flagged=self.flagged)


def allowed_in_two_steps(
    system: LegacySystemType, rows: Any, new: sa.ColumnElement[Any]
) -> sa.ColumnElement[bool]:
    """Whether the unified row's status may become ``new`` through the status an UPDATE's
    row found in legacy (``rows``: its columns, :data:`WAS_STATUS`) where that is not
    unified's image of it: a statement not captured yet wrote it (the writer's own, whose
    trigger of the application's wrote the row again in a nested statement, captured
    first). Legacy moved in those two steps, each judged by the rules; never NULL."""
    was, U = rows[WAS_STATUS], unified_transactions
    mapped, ttype = forward_case(system, was), system.transaction_type
    two_steps = sa.and_(
        was.is_distinct_from(U.c.legacy_status),
        allowed_clause(ttype, U.c.status, mapped),
        allowed_clause(ttype, mapped, new),
    )
    return sa.func.coalesce(two_steps, sa.false())
