"""The caller's ORM Session: its connection for the adapter, and after the adapter
wrote in its transaction.

Its connection (:func:`session_connection`): its pending rows flushed first where it
autoflushes (as its own next query would), and also where it does not but holds an
unflushed change to a legacy row: the adapter reads and writes those rows with SQL of
its own, so a status the caller changed and did not flush was judged from the stored
one, and flushed at the caller's commit over the adapter's write (the two sides apart,
silently). Those rows are flushed with the pending objects they need (a new parent
whose key one takes), the rest of the caller's pending objects left as they are. What
keeps it from being had is a :class:`SessionUnusable`: the database failing (counted a
failure), or the caller's own (its rows refused, its transaction already failed: a
refusal).

After the write: the adapter writes the legacy row with SQL the Session does not see, so an instance of
that row the Session has loaded (the application's model of its legacy table) would go
on showing the old status, even through ``session.get``. The attributes the adapter
writes are expired on it instead: the next read loads them from the transaction. Only
those: a change of the caller's own to the instance, not flushed yet, is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import UnmappedColumnError

from unistatus.db.failures import describe
from unistatus.db.legacy import LegacyTable

__all__ = ["SessionUnusable", "expire_written", "session_connection"]


class SessionUnusable(Exception):
    """Why ``session`` gave no connection: ``database`` True when the database failed
    (unreachable, the pool exhausted), False when the caller's own pending rows were
    refused by it (their flush: the caller's error, nothing of the adapter's)."""

    def __init__(self, message: str, *, database: bool) -> None:
        super().__init__(message)
        self.database = database


def session_connection(session: Session, legacy: Iterable[LegacyTable]) -> sa.Connection:
    """``session``'s connection, its pending rows flushed first (see the module)."""
    try:
        if session.autoflush:
            session.flush()
        elif pending := _legacy_pending(session, list(legacy)):
            session.flush(_with_what_they_need(session, pending))
    except sa.exc.SQLAlchemyError as exc:
        database = _the_database(exc)
        said = "the database failed flushing" if database else "the database refused"
        raise SessionUnusable(
            f"{said} the caller's own pending changes in its Session before the call "
            f"({describe(exc)}); nothing of the call was written",
            database=database,
        ) from None
    try:
        return session.connection()
    except sa.exc.UnboundExecutionError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise SessionUnusable(
            f"the caller's Session gave no connection: {describe(exc)}",
            database=_the_database(exc),
        ) from None


def _the_database(exc: sa.exc.SQLAlchemyError) -> bool:
    """Whether ``exc`` is the database failing or unreachable (a failure, counted), not
    the caller's own (its rows refused, its transaction already failed: a refusal)."""
    lost = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
    return isinstance(exc, lost) or isinstance(exc, sa.exc.DisconnectionError)


def _legacy_pending(session: Session, tables: list[LegacyTable]) -> list[object]:
    """The rows of the legacy ``tables`` with an unflushed change in ``session``."""
    changed = (*session.new, *session.dirty, *session.deleted)
    return [o for o in changed if _of_legacy(o, tables)]


def _with_what_they_need(session: Session, rows: list[object]) -> list[object]:
    """``rows`` and the pending objects they reach through their relationships' save
    cascade (a new parent whose key a row's foreign key takes): a flush of the rows
    alone wrote that key NULL, for good (found by a review). Other pending objects
    (a ledger row the caller completes from the adapter's result) are left unflushed, as
    a Session without autoflush leaves them."""
    unsaved = set(map(id, (*session.new, *session.dirty)))
    out = {id(o): o for o in rows}
    for row in rows:
        state: Any = sa.inspect(row)
        for related, _mapper, _state, _dict in state.mapper.cascade_iterator("save-update", state):
            if id(related) in unsaved:
                out.setdefault(id(related), related)
    return list(out.values())


def _of_legacy(instance: object, tables: list[LegacyTable]) -> bool:
    """Whether ``instance`` is a row of one of the legacy ``tables``."""
    state: Any = sa.inspect(instance)
    mapper = state.mapper
    return any(_same_table(t, lt.table) for t in mapper.tables for lt in tables)


def expire_written(session: Session, lt: LegacyTable, legacy_id: int, conn: sa.Connection) -> None:
    """Expire the status and update time of ``session``'s instance of legacy row
    ``legacy_id`` of ``lt``, if it holds one (an attribute the caller changed and did not
    flush keeps the caller's value: expiring it would drop the change); a Session made
    with ``expire_on_commit=False`` reads them again at once instead, on ``conn`` (the
    connection written on) only."""
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
        if not expired:
            continue
        if session.expire_on_commit or not _reads_on(session, mapper, conn):
            session.expire(instance, expired)  # read again when used, as after a commit
            continue
        # Its objects are to stay readable once the Session ends (an expired attribute
        # of a detached object cannot load): read them again now, on the connection the
        # write is on. Should that fail, the caller's transaction has (its own error
        # comes with its next statement): expired, as the others.
        try:
            session.refresh(instance, expired)
        except sa.exc.SQLAlchemyError:
            session.expire(instance, expired)


def _reads_on(session: Session, mapper: Any, conn: sa.Connection) -> bool:
    """Whether ``session`` reads ``mapper``'s rows through ``conn``'s database
    connections: a model bound to another engine (``Session(binds=...)``) is read on
    another connection, which does not see the write before it commits."""
    bind = session.get_bind(mapper=mapper)
    engine = bind.engine if isinstance(bind, sa.Connection) else bind
    return engine.pool is conn.engine.pool


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
