"""The writer mark: how a write tells the capture triggers it comes from unistatus.

The capture triggers (:mod:`unistatus.migration.capture`) bring unified in step after a
legacy write that bypassed the adapter, and count direct writes to
``unified_transactions``; unistatus's own writes (adapter, backfill, repair, replay)
must be told apart, and a trigger cannot tell by the data. So every unistatus write
transaction carries a mark, for as long as it writes:

- PostgreSQL: the transaction-local setting :data:`WRITER_SETTING` (``set_config(...,
  true)``; gone at COMMIT or ROLLBACK, and undone with a savepoint rolled back to). The
  statements that take the mode lock set it (:class:`unistatus.db.dialect.PostgresOps`,
  and ``unistatus_locked_mode()`` from revision 0011, which sets it to the mode it read
  under the lock), so the adapter's writes cost no extra round trip; other writers set
  :data:`MARK` when their write transaction begins. Empty or unset: not unistatus. A
  legacy statement nested in a trigger's is never unistatus's, whatever the mark
  (unistatus writes legacy in top-level statements only: ``capture_marked``).
- SQLite: a row of ``unistatus_writer_marks`` inserted after ``BEGIN IMMEDIATE`` and
  deleted before COMMIT. The write transaction holds the whole database, so no other
  connection ever sees it; a row left committed by accident is deleted by the next
  unistatus write transaction.

Inside the caller's transaction (``connection=``) the adapter clears the mark when its
operation ends, so the caller's own SQL after it in the same transaction is captured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from unistatus.db.tables_capture import writer_marks

__all__ = [
    "CAPTURE_WRITER",
    "CREATING",
    "MARK",
    "REPLAYING",
    "UNISTATUS_WRITER",
    "WRITER_SETTING",
    "clear_mark",
    "current_mark",
    "marked_as",
    "marked_sqlite",
    "set_mark",
    "unmarked_postgres",
]

WRITER_SETTING = "unistatus.writer"
# The PostgreSQL mark of a unistatus writer that did not read the mode under the lock.
MARK = "on"
# SQLite: the row a unistatus write transaction holds, and the one the capture triggers
# hold while they write unified themselves (so their writes are not counted as foreign).
UNISTATUS_WRITER = "unistatus"
CAPTURE_WRITER = "capture"
# PostgreSQL: unistatus creating legacy rows for unified rows that exist (the replay of
# creates made in UNIFIED_ONLY, the repair of a refused create): a statement an
# application's trigger nests in that INSERT is not taken as a bypass write, which would
# find the new legacy row not linked yet and create a second unified row for it
# (migration/capture_marked.py).
CREATING = "creating"
# PostgreSQL: the rollback's replay writing legacy: a statement an application's trigger
# nests in it is not taken as a bypass write either; in UNIFIED_ONLY it would supersede
# the changes of the transaction still to replay and override unified's newest status.
REPLAYING = "replaying"


def set_mark(value: Any = MARK) -> sa.FunctionElement[Any]:
    """PostgreSQL: mark the rest of this transaction as unistatus's (returns ``value``)."""
    return sa.func.set_config(WRITER_SETTING, value, True, type_=sa.Text)


def clear_mark() -> sa.FunctionElement[Any]:
    """PostgreSQL: the rest of this transaction is no longer unistatus's."""
    return sa.func.set_config(WRITER_SETTING, "", True, type_=sa.Text)


def current_mark() -> sa.FunctionElement[Any]:
    """PostgreSQL: the mark as set ('' or NULL: none)."""
    return sa.func.current_setting(WRITER_SETTING, True, type_=sa.Text)


@contextmanager
def marked_as(conn: sa.Connection, value: str) -> Iterator[None]:
    """PostgreSQL: the block's statements marked ``value``, and the mark found put back
    after it (SQLite: nothing to do). On an error the mark is left to the transaction's
    (or its savepoint's) rollback, which undoes it."""
    if conn.dialect.name != "postgresql":
        yield
        return
    before = conn.execute(sa.select(current_mark())).scalar()
    conn.execute(sa.select(set_mark(value)))
    yield
    conn.execute(sa.select(set_mark(before or "")))


def unmarked_postgres() -> sa.ColumnElement[bool]:
    """PostgreSQL: true when the current transaction carries no unistatus mark."""
    return sa.func.coalesce(current_mark(), "") == ""


def marked_sqlite() -> sa.ColumnElement[bool]:
    """SQLite: true while a unistatus writer (or the capture trigger) holds its mark."""
    return sa.exists(sa.select(writer_marks.c.writer))


def mark_row(writer: str = UNISTATUS_WRITER) -> sa.Insert:
    """SQLite: the statement that marks (idempotent)."""
    return sa.insert(writer_marks).values(writer=writer).prefix_with("OR REPLACE")


def unmark_row(writer: str = UNISTATUS_WRITER) -> sa.Delete:
    """SQLite: the statement that removes the mark."""
    return sa.delete(writer_marks).where(writer_marks.c.writer == writer)
