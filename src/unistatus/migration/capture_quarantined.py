"""The capture's rows with an open quarantine entry: taken whole, then resolved.

While a legacy row's status (or a shared field) is unmappable, every statement that
writes it is set aside whole: unified is left as it was, whatever else the statement
changed (a ``SET amount = 42`` while the status is ``REFUND_REQUESTED``). So when the row
maps again, what it changed meanwhile is only in legacy, and an UPDATE judged by the
columns it changed itself (:meth:`~unistatus.migration.capture_rows.Rows.changed_from`)
would lose it. A row with an open entry is therefore taken whole, as the catch-up's rows
and a row without a unified row are (docs/capture.md); its entry is resolved
(``migrated``) after the judging, which must still see it open. Its status too, but only
where legacy is the truth (a mode that reads legacy): where unified is read, legacy's
status may be behind on purpose (UNIFIED_ONLY's changes awaiting their replay, a refused
legacy side queued under ``primary_wins``), and taking it would write that older status
over acknowledged writes; the statement's own status change is taken as always.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.db.tables_backfill import backfill_quarantine
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.capture_context import Context
from unistatus.migration.capture_rows import CHANGEABLE, Rows, changed_flag

__all__ = ["resolve_migrated", "whole_when_quarantined"]

Q = backfill_quarantine


def _open(system: LegacySystemType) -> sa.ColumnElement[bool]:
    return sa.and_(Q.c.system == system.value, Q.c.resolved_at.is_(None))


def whole_when_quarantined(
    r: Rows, system: LegacySystemType, reads_legacy: sa.ColumnElement[bool], *, fenced: bool
) -> Rows:
    """An UPDATE's rows (:attr:`Rows.flagged`), each row with an open quarantine entry
    marked as changed in every kept column (taken whole), its status only where the mode
    ``reads_legacy``; other rows as they are.

    ``fenced`` (PostgreSQL): the entry is probed once per row (OFFSET 0), not once per
    flag that reads it."""
    if not r.flagged:
        return r
    entry = sa.exists(sa.select(Q.c.legacy_id).where(_open(system), Q.c.legacy_id == r.c.id))
    probed = sa.select(*r.c, entry.label("quarantined"))
    inner = (probed.offset(0) if fenced else probed).subquery("capture_probed").c
    whole: dict[str, sa.ColumnElement[bool]] = {
        changed_flag(name): inner.quarantined for name in CHANGEABLE
    }
    whole[changed_flag("status")] = sa.and_(inner.quarantined, reads_legacy)
    columns = [
        sa.or_(inner[c.name], whole[c.name]).label(c.name) if c.name in whole else inner[c.name]
        for c in r.c
    ]
    return Rows(sa.select(*columns).subquery("capture_whole"), flagged=True)


def resolve_migrated(
    system: LegacySystemType, legacy_id: Any, mapped: Any, ctx: Context
) -> sa.Executable:
    """The open entries of the judged rows whose value maps now, resolved (``migrated``).

    ``legacy_id``, ``mapped``: the judged rows' columns (every legacy row of the
    statement that has its unified row; one without gets it first). Run after the
    judging, which reads the entries open (PostgreSQL: a CTE of the same statement reads
    its snapshot)."""
    judged = sa.select(legacy_id).where(mapped.is_not(None)).scalar_subquery()
    return (
        sa.update(Q)
        .where(_open(system), Q.c.legacy_id.in_(judged))
        .values(resolved_at=ctx.now, resolution="migrated")
    )
