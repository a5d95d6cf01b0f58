"""The writers of a frozen legacy status column, counted even when they change nothing.

In UNIFIED_ONLY legacy is frozen: a statement that writes a legacy table's status column
is a code path not yet converted, whatever it writes. One that changes a value is
mirrored and counted by the system's own triggers (:mod:`unistatus.migration.capture_ddl`);
one that writes the value the row holds (``SET status = 'EXECUTING'`` where frozen legacy
holds ``EXECUTING``, ``SET status = status``, an ORM's save of the whole row) changes
nothing row by row, so nothing of it is recorded (its value cannot be told from a
statement that meant to keep the row: docs/capture.md, "UNIFIED_ONLY"). The trigger here
counts its writer all the same (one write, flagged), so the alert of bypass writes to
frozen legacy tables and ``capture status`` name it. It writes no history, touches no
unified row, and does nothing outside UNIFIED_ONLY.

- PostgreSQL: ``AFTER UPDATE OF <status> ... FOR EACH STATEMENT`` (it fires whenever the
  column is in the SET list, whatever the rows; a column list cannot be combined with
  transition tables, so it sees no row): it calls the system's own function with
  :data:`ARGUMENT`, which counts the statement (:func:`pg_block`), only when unistatus's
  writer mark is unset or the statement is nested in a trigger's, which is never
  unistatus's own (its ``WHEN``: an adapter write costs no call; the function judges a
  nested one as :mod:`~unistatus.migration.capture_marked` says). Its name sorts
  after the system's UPDATE trigger, so it fires after it: a statement that trigger
  counted (it changed a row) is not counted again (:func:`counted`, ``per_statement``).
  Reached through the system's function, so ``disable``, the retirement and revision
  0011's downgrade, which drop that function's triggers, drop it too.
- SQLite: ``AFTER UPDATE OF <status> ... FOR EACH ROW``, for the rows that changed
  nothing unistatus keeps (the system's UPDATE trigger counts the others): one write each.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from unistatus.db import writer_mark
from unistatus.db.legacy import LegacyTable
from unistatus.migration.capture_context import FROZEN, Context, count_writes

__all__ = ["ARGUMENT", "SHORT", "counted", "pg_block", "pg_trigger"]

# The trigger's name after the system's prefix: after "upd", so PostgreSQL fires it after
# the system's UPDATE trigger (triggers of one event fire in the order of their names).
SHORT = "upd_frozen"
# What the PostgreSQL trigger passes to the system's function (TG_ARGV[0]).
ARGUMENT = "status_written"


def counted(
    insert: Callable[[sa.Table], Any], lt: LegacyTable, ctx: Context, *, per_statement: bool
) -> sa.Executable:
    """One write of this writer on ``lt``'s system, flagged (legacy frozen).
    ``per_statement``: none when this statement was counted already (the writer's row
    last seen at this statement's time)."""
    counts = sa.select(
        sa.literal(1, sa.BigInteger).label("writes"),
        sa.literal(1, sa.BigInteger).label("flagged"),
        sa.literal(0, sa.BigInteger).label("unmappable"),
    ).subquery("counts")
    return count_writes(insert, lt.system.value, counts, ctx, per_statement=per_statement)


def pg_block(plpgsql: Callable[[list[Any]], str], count: sa.Executable, writer: str) -> str:
    """The start of the system's function when the trigger here called it: count the
    writer in UNIFIED_ONLY, then return (the rest reads transition tables it has not)."""
    body = textwrap.indent(plpgsql([count]), " " * 8)
    return f"""IF TG_NARGS > 0 THEN
    -- UPDATE OF the status column (capture_frozen.py): counted while legacy is frozen.
    IF v_mode = '{FROZEN}' THEN
        v_writer := {writer};
        v_addr := host(inet_client_addr());
{body}
    END IF;
    RETURN NULL;
END IF;"""


def pg_trigger(name: str, table: str, column: str, function: str) -> str:
    """The statement trigger on ``table`` (names quoted as SQL needs them). In its
    ``WHEN``, ``pg_trigger_depth()`` is the depth of the statement (0: top level)."""
    unmarked = f"coalesce(current_setting('{writer_mark.WRITER_SETTING}', true), '') = ''"
    return (
        f"CREATE TRIGGER {name} AFTER UPDATE OF {column} ON {table} FOR EACH STATEMENT "
        f"WHEN ({unmarked} OR pg_trigger_depth() > 0) EXECUTE FUNCTION {function}('{ARGUMENT}')"
    )
