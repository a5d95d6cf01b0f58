"""What became of the adapter's writes in a caller's transaction, once it has ended.

A write is kept only if no savepoint enclosing it was rolled back and the caller's
COMMIT succeeded. Followed on the connection itself (not on a Session, which may be
joined to a transaction it does not own), with SQLAlchemy's connection and pool events;
SQLAlchemy's ``commit`` event fires before COMMIT is sent, so a write is kept only once
the connection goes on after it. How and why: docs/adapter.md, "When the caller's
transaction ends".
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from unistatus.db.failures import describe
from unistatus.db.transaction_state import transaction_failed

__all__ = ["ROLLED_BACK", "SAVEPOINT_ROLLED_BACK", "CallerWrite", "Ending", "track"]

log = logging.getLogger("unistatus.adapter.core")

ROLLED_BACK = "rolled back by the caller"
SAVEPOINT_ROLLED_BACK = "rolled back by the caller (to a savepoint)"
FAILED_BEFORE_COMMIT = (
    f"{ROLLED_BACK}: its transaction had failed (a statement in it failed), and the "
    "database answers the COMMIT of a failed transaction with ROLLBACK"
)
# Where a connection keeps its pending writes: the pool's per-connection dict
# (``Connection.info``), so they are found again when it is returned to the pool.
_KEY = "unistatus_caller_writes"


@dataclass(frozen=True)
class Ending:
    """How a write ended: kept (committed), or why not."""

    kept: bool
    error: str | None = None
    outcome_unknown: bool = False


KEPT = Ending(True)


@dataclass(eq=False)
class CallerWrite:
    """One write in a caller's transaction, until it ends.

    ``end`` hears how it ended, once; ``undo`` (if given) is called as soon as it is
    known to be undone (a savepoint rolled back, the transaction rolled back).
    """

    end: Callable[[Ending], None]
    undo: Callable[[], None] | None = None
    # The savepoints enclosing it (names, outermost first): rolling back to any of them
    # undoes it; releasing one hands it to the savepoint enclosing that one.
    savepoints: tuple[str, ...] = ()
    undone: str | None = None


@dataclass(eq=False)
class _Open:
    """The writes made in a connection's current transaction."""

    writes: list[CallerWrite] = field(default_factory=list)
    # COMMIT was sent (the ``commit`` event): kept unless it fails.
    committing: bool = False


def track(conn: sa.Connection, write: CallerWrite) -> None:
    """Follow ``write``, just made on ``conn`` (in the caller's transaction)."""
    _listen(conn.engine)
    info = conn.info
    state = info.get(_KEY)
    if state is None:
        state = info[_KEY] = _Open()
    write.savepoints = _open_savepoints(conn)
    state.writes.append(write)


# --- the events ---------------------------------------------------------------------------

_installed: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_install_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    global _install_lock
    _install_lock = threading.Lock()  # a thread of the parent may have held it


os.register_at_fork(after_in_child=_new_lock_after_fork)


def _listen(engine: sa.Engine) -> None:
    """Listen once per engine (every connection of it, also those already open), and
    once per pool and dialect, which an engine's ``execution_options()`` copies share."""
    if engine in _installed:
        return
    with _install_lock:
        if engine in _installed:
            return
        if not event.contains(engine.dialect, "handle_error", _on_error):
            event.listen(engine.dialect, "handle_error", _on_error)
        if not event.contains(engine.pool, "checkin", _on_checkin):
            event.listen(engine.pool, "checkin", _on_checkin)
        event.listen(engine, "begin", _on_begin)
        event.listen(engine, "commit", _on_commit)
        event.listen(engine, "commit_twophase", _on_commit_twophase)
        event.listen(engine, "rollback_twophase", _on_rollback_twophase)
        event.listen(engine, "rollback", _on_rollback)
        event.listen(engine, "release_savepoint", _on_release_savepoint)
        event.listen(engine, "rollback_savepoint", _on_rollback_savepoint)
        _installed.add(engine)


def _state(conn: sa.Connection) -> _Open | None:
    try:
        state: _Open | None = conn.info.get(_KEY)
    except sa.exc.SQLAlchemyError:  # closed or invalidated: nothing to follow there
        return None
    return state


def _open_savepoints(conn: sa.Connection) -> tuple[str, ...]:
    """The names of the savepoints open on ``conn``, outermost first (unique per
    connection: SQLAlchemy numbers them). SQLAlchemy keeps them as a chain of its
    nested transactions, which only its private attributes walk."""
    names: list[str] = []
    nested = conn.get_nested_transaction()
    while nested is not None:
        name = getattr(nested, "_savepoint", None)
        if nested.is_active and isinstance(name, str):
            names.append(name)
        nested = getattr(nested, "_previous_nested", None)
    return tuple(reversed(names))


def _on_commit(conn: sa.Connection) -> None:
    """COMMIT is about to be sent: kept once the connection goes on without an error;
    not kept at all if the transaction had failed (PostgreSQL answers ROLLBACK)."""
    state = _state(conn)
    if state is None:
        return
    if transaction_failed(conn):
        _finish(conn.info, state, Ending(False, FAILED_BEFORE_COMMIT))
        return
    state.committing = True


def _on_commit_twophase(conn: sa.Connection, _xid: Any, _is_prepared: bool) -> None:
    _on_commit(conn)


def _on_rollback_twophase(conn: sa.Connection, _xid: Any, _is_prepared: bool) -> None:
    _on_rollback(conn)


def _on_error(context: sa.engine.ExceptionContext) -> None:
    """An error on a connection whose COMMIT was just sent is that COMMIT's failure
    (nothing else runs on it before the next ``begin``): nothing was kept, or, if the
    connection was lost, nobody knows. A connection lost before took its transaction
    with it."""
    conn = context.connection
    state = _state(conn) if conn is not None else None
    if conn is None or state is None:
        return
    cause = describe(context.original_exception)
    if not state.committing:
        if context.is_disconnect:
            lost = f"{ROLLED_BACK}: its connection was lost ({cause})"
            _finish(conn.info, state, Ending(False, lost))
        return
    if context.is_disconnect:
        ending = Ending(False, f"connection lost during the caller's COMMIT: {cause}", True)
    else:
        ending = Ending(False, f"the caller's COMMIT failed: {cause}")
    _finish(conn.info, state, ending)


def _on_begin(conn: sa.Connection) -> None:
    """The connection goes on: its last COMMIT succeeded."""
    state = _state(conn)
    if state is not None:
        _finish(conn.info, state, KEPT if state.committing else Ending(False, ROLLED_BACK))


def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
    """Back in the pool: its last COMMIT succeeded (a transaction still open there is
    rolled back by the pool)."""
    info: dict[Any, Any] | None = getattr(record, "info", None)
    state = info.get(_KEY) if info is not None else None
    if info is not None and state is not None:
        _finish(info, state, KEPT if state.committing else Ending(False, ROLLED_BACK))


def _on_rollback(conn: sa.Connection) -> None:
    state = _state(conn)
    if state is not None:
        _finish(conn.info, state, Ending(False, ROLLED_BACK))


def _on_release_savepoint(conn: sa.Connection, name: Any, _context: Any) -> None:
    """RELEASE hands the writes in ``name`` (and in savepoints inside it) to the one
    enclosing it."""
    state = _state(conn)
    if state is None:
        return
    for w in state.writes:
        if name in w.savepoints:
            w.savepoints = w.savepoints[: w.savepoints.index(name)]


def _on_rollback_savepoint(conn: sa.Connection, name: Any, _context: Any) -> None:
    """ROLLBACK TO ``name`` undoes every write made since it, in savepoints inside it
    too, even those the caller left open."""
    state = _state(conn)
    if state is None:
        return
    for w in state.writes:
        if name in w.savepoints and w.undone is None:
            w.undone = SAVEPOINT_ROLLED_BACK
            _call(w.undo)


def _finish(info: dict[Any, Any], state: _Open, ending: Ending) -> None:
    """The transaction ended: every write hears how (never raising into SQLAlchemy)."""
    if info.get(_KEY) is state:
        del info[_KEY]
    for w in state.writes:
        if w.undone is not None:
            _call(w.end, Ending(False, w.undone))
            continue
        if not ending.kept:
            _call(w.undo)
        _call(w.end, ending)


def _call(fn: Callable[..., None] | None, *args: Any) -> None:
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:  # an observer must never break the caller's COMMIT or ROLLBACK
        log.exception("observing the end of a caller's transaction failed")
