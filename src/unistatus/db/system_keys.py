"""Control values kept per legacy system (the mode, the phase), and their summary.

A family of control values (``mode``, ``phase``) keeps one key per legacy system,
``<family>.<SYSTEM>`` (:func:`system_key`), and the family's own key (``mode``,
``phase``) as a summary for readers that predate per-system values: the value of every
system while they agree, absent while they differ (:func:`write_summary`).

Writers of different systems hold different locks (each system's mode lock), so the
summary, which depends on every system, is written under a lock of its own
(:meth:`unistatus.db.dialect.DialectOps.summary_lock`), taken after the system's, and
from every system's value read afresh under it: two systems changing at once write it
one after the other, the second from the first's committed value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from unistatus.clock import utcnow
from unistatus.db.dialect import ops_for
from unistatus.db.tables import migration_control
from unistatus.domain.statuses import LegacySystemType

__all__ = ["SYSTEMS", "system_key", "system_keys", "systems_of", "write_summary"]

SYSTEMS: tuple[LegacySystemType, ...] = tuple(LegacySystemType)


def systems_of(system: LegacySystemType | None) -> tuple[LegacySystemType, ...]:
    """``system`` alone, or every system for None."""
    return SYSTEMS if system is None else (LegacySystemType.parse(system),)


def system_key(family: str, system: LegacySystemType) -> str:
    """The control key of ``system``'s value of ``family`` (``mode.CASHOUT``)."""
    return f"{family}.{LegacySystemType.parse(system).value}"


def system_keys(family: str, system: LegacySystemType | None = None) -> tuple[str, ...]:
    """The control keys that logged changes of ``system``'s value of ``family`` (None:
    any system's): the global key (which held every system's before the family went
    per system), then the system's own."""
    return (family, *(system_key(family, s) for s in systems_of(system)))


def write_summary(
    conn: sa.Connection,
    family: str,
    read: Callable[[sa.Connection], Mapping[LegacySystemType, Any]],
    actor: str,
) -> None:
    """Set ``family``'s global key, in the caller's transaction, to the value every
    system has (as stored: ``str()`` of it), or delete it while they differ.

    Call it after writing the system's own key, holding its mode lock: it takes the
    summary lock and then reads every system's value afresh with ``read`` (e.g.
    :func:`unistatus.db.mode_reads.read_modes`), so it never writes what another system's
    writer has already changed. Not logged: the per-system rows say what changed.
    """
    ops = ops_for(conn.engine)
    ops.summary_lock(conn)
    values = {str(value) for value in read(conn).values()}
    C = migration_control
    if len(values) != 1:
        conn.execute(sa.delete(C).where(C.c.key == family))
        return
    row = {"value": values.pop(), "updated_at": utcnow(), "updated_by": actor}
    upsert = ops.insert(C).values(key=family, **row)
    conn.execute(upsert.on_conflict_do_update(index_elements=[C.c.key], set_=row))
