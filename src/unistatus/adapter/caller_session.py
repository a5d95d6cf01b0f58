"""The caller's ORM Session after the adapter wrote in its transaction.

The adapter writes the legacy row with SQL the Session does not see, so an instance of
that row the Session has loaded (the application's model of its legacy table) would go
on showing the old status, even through ``session.get``. The attributes the adapter
writes are expired on it instead: the next read loads them from the transaction. Only
those: a change of the caller's own to the instance, not flushed yet, is kept.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import UnmappedColumnError

from unistatus.db.legacy import LegacyTable

__all__ = ["expire_written"]


def expire_written(session: Session, lt: LegacyTable, legacy_id: int) -> None:
    """Expire the status and update time of ``session``'s instance of legacy row
    ``legacy_id`` of ``lt``, if it holds one (an attribute the caller changed and did not
    flush keeps the caller's value: expiring it would drop the change)."""
    identity = (legacy_id,)
    # The identity map's keys are (class, primary key, token): compared first, cheaply.
    for key in [k for k in session.identity_map.keys() if k[1] == identity]:
        instance = session.identity_map.get(key)
        if instance is None:
            continue
        state: Any = sa.inspect(instance)
        mapper = state.mapper
        if not any(_same_table(table, lt.table) for table in mapper.tables):
            continue
        keys = [_attribute(mapper, c) for c in (lt.status, lt.updated_at) if c is not None]
        expired = [k for k in keys if k is not None and not state.attrs[k].history.has_changes()]
        if expired:
            session.expire(instance, expired)


def _same_table(mapped: sa.FromClause, legacy: sa.Table) -> bool:
    """The application's table and ours are the same one: same name, and same schema
    where both name one (a model without a schema finds it through the search_path)."""
    if not isinstance(mapped, sa.Table) or mapped.name != legacy.name:
        return False
    return mapped.schema is None or legacy.schema is None or mapped.schema == legacy.schema


def _attribute(mapper: Any, column: sa.Column[Any]) -> str | None:
    """The model's attribute for the column of ``column``'s name, if it maps one."""
    for table in mapper.tables:
        mine = table.c.get(column.name) if isinstance(table, sa.Table) else None
        if mine is None:
            continue
        try:
            return str(mapper.get_property_by_column(mine).key)
        except UnmappedColumnError:
            continue
    return None
