"""PostgreSQL: how a legacy table's capture function tells unistatus's own writes apart.

The start and the end of the function :mod:`unistatus.migration.capture_ddl` generates
per legacy system. unistatus marks its write transactions (:mod:`unistatus.db.writer_mark`):
the adapter's statements set the mark to the mode they read under the mode locks
(``unistatus_locked_mode(system)``), other writers to :data:`~writer_mark.MARK`, the
capture to :data:`~writer_mark.CAPTURE_WRITER` while it writes. A marked statement is
unistatus's, with one exception: a statement nested in a trigger's (``pg_trigger_depth()
> 1`` in the function it fires), such as the application's own trigger writing the legacy
row again after the adapter wrote it. unistatus writes legacy tables only in top-level
statements (the adapter's, the replay's, the repair's, a resolved conflict's, all sent
from Python), so a nested one is never its own: it is taken as a bypass write whatever
the mark says (the capture's own mark apart: the capture writes no legacy table; and
unistatus creating legacy rows for unified rows that exist, :data:`~writer_mark.CREATING`:
a nested write of such a row would find it not linked yet, and create a second unified
row for it; and the rollback's replay, :data:`~writer_mark.REPLAYING`: in UNIFIED_ONLY a
nested write would supersede the transaction's changes still to replay and override
unified's newest status; both left to the replay's conflicts, check and repair, as
before this rule). It
reads its own system's mode under that system's mode locks, as an unmarked write does
(a session already holding them, shared or exclusive, is granted them at once), and at
its end puts back the mark it found, so the statement it is nested in (whose own capture
fires after it) and the rest of unistatus's transaction stay marked. docs/capture.md,
"The application's triggers".
"""

from __future__ import annotations

from unistatus.db import writer_mark
from unistatus.domain.statuses import DualWriteMode

__all__ = ["pg_declare", "pg_mode", "pg_restore_mark"]

LEGACY_ONLY = DualWriteMode.LEGACY_ONLY.value


def pg_declare() -> str:
    """The function's DECLARE section: the mark found (``v_prev``, put back at the end),
    the mark as the function judges it (``v_mark``), and what the capture works with."""
    setting = writer_mark.WRITER_SETTING
    return f"""DECLARE
    v_prev text := coalesce(current_setting('{setting}', true), '');
    v_mark text := v_prev;
    v_mode text;
    v_writer text;
    v_addr text;
    v_reason text;
    v_meta jsonb;"""


def pg_mode(read_mode: str, mode_lock_key: int, system_key: int) -> str:
    """The start of the function's body: return at once for unistatus's own write (or
    the capture's), else set ``v_mode`` to the mode of the table's system, read under
    the installation's and the system's mode locks unless the mark is that mode already
    (LEGACY_ONLY: the adapter read it under those locks; only logged)."""
    own = ", ".join(
        f"'{m}'" for m in (writer_mark.CAPTURE_WRITER, writer_mark.CREATING, writer_mark.REPLAYING)
    )
    return f"""-- A statement nested in a trigger's (an application's trigger writing this table
-- again) is never unistatus's own write: unistatus writes legacy in top-level
-- statements only. Taken as a bypass write whatever the mark (capture_marked.py).
IF pg_trigger_depth() > 1 AND v_mark NOT IN ({own}) THEN
    v_mark := '';
END IF;
-- unistatus wrote it, in a mode it read under the mode lock that maintains unified
-- (unistatus_locked_mode(system)), or the capture itself: nothing to do.
IF v_mark NOT IN ('', '{writer_mark.MARK}', '{LEGACY_ONLY}') THEN
    RETURN NULL;
END IF;
IF v_mark = '{LEGACY_ONLY}' THEN
    v_mode := v_mark;
ELSE
    -- Held until the writer's transaction ends: no switch of this system's mode
    -- (nor of every system's) in between.
    PERFORM pg_advisory_xact_lock_shared({mode_lock_key});
    PERFORM pg_advisory_xact_lock_shared({system_key});
    v_mode := ({read_mode});
END IF;"""


def pg_restore_mark() -> str:
    """After the capture's own writes (marked :data:`~writer_mark.CAPTURE_WRITER`): the
    mark as the function found it ('' for a bypass writer's statement; unistatus's for a
    statement nested in its write)."""
    return f"PERFORM set_config('{writer_mark.WRITER_SETTING}', v_prev, true);"
