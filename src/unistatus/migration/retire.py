"""Phase 4 cleanup: drop the legacy status columns, reversibly.

Decides when the drop (Alembic revision 0006, the ``retire`` branch) may run (UNIFIED_ONLY,
a verified archive, every legacy status restorable), runs it, and undoes it. What is
checked and how the undo refills the columns: docs/retire.md.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db import schema
from unistatus.db.binding import require_bound
from unistatus.db.column_dependents import (
    drop_column_dependents,
    pg_triggers_reading,
    sqlite_triggers_naming,
)
from unistatus.db.control import history
from unistatus.db.ddl_wait import attempt_ms, read_politely
from unistatus.db.dialect import ops_for
from unistatus.db.legacy import indexes_a_drop_cannot_keep, resolve_legacy_tables
from unistatus.db.legacy_kinds import NOT_A_TABLE, not_a_table
from unistatus.db.legacy_reflect import (
    legacy_table_kinds,
    legacy_table_name,
    legacy_table_sql,
    reflect_legacy_table,
)
from unistatus.db.legacy_types import as_text
from unistatus.db.mode_reads import read_mode
from unistatus.db.retry import retry_reason
from unistatus.db.revisions import RETIRE_REVISION, columns_retired
from unistatus.db.tables import unified_transactions
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import GateError, InputError, StorageError, UnistatusError
from unistatus.migration import capture, compat_views
from unistatus.migration.archive import (
    read_manifest,
    recorded_archive,
    status_gaps,
    verify_archive,
)
from unistatus.migration.check import projected_legacy_status
from unistatus.migration.retire_locks import (
    DROP_WHAT,
    RETIRE_COMMAND,
    UNDO_COMMAND,
    Deadline,
    politely,
)
from unistatus.migration.retire_refill import rows_without_a_status
from unistatus.migration.unreplayed import projected_systems

__all__ = [
    "blockers",
    "drop_compat_views",
    "legacy_columns_dropped",
    "retire_legacy_columns",
    "status_checksum",
    "undo_cleanup",
]

CONTROL_KEY = "legacy_columns"
U = unified_transactions


def legacy_columns_dropped(engine: sa.Engine, settings: Settings) -> bool:
    """True while revision 0006 is applied (the legacy status columns are gone)."""
    require_bound(engine, settings.schema)
    with engine.connect() as conn:
        return columns_retired(conn)


def blockers(conn: sa.Connection, settings: Settings) -> list[str]:
    """Why the columns may not be dropped now (empty: they may). Cheap, in-database.

    Revision 0006 runs a frozen copy of these checks (same rules, same messages)
    inside its transaction, so that no path (not even a direct ``alembic upgrade``)
    drops the columns without them.
    """
    problems: list[str] = []
    mode = read_mode(conn)
    if mode is not DualWriteMode.UNIFIED_ONLY:
        problems.append(
            f"the mode is {mode.value}, not UNIFIED_ONLY: legacy must be frozen first "
            "(phase 4: `unistatus phase advance`)"
        )
    if recorded_archive(conn) is None:
        problems.append(
            "no verified archive is recorded: run `unistatus archive export --out DIR` "
            "then `unistatus archive verify DIR`"
        )
    projected = projected_systems(conn)
    kinds = legacy_table_kinds(conn, list(settings.legacy_tables.values()))
    views = not_a_table(kinds, "the retirement")  # DROP COLUMN needs a table (and 0006's copy)
    if views is not None:
        problems.append(views)
    for system in LegacySystemType:
        spec = settings.legacy_tables[system.value]
        table = reflect_legacy_table(conn, spec)
        if any((legacy_table_name(spec), kind) in kinds for kind in NOT_A_TABLE):
            continue  # what else it lacks is for after it is a table
        if table is None:
            problems.append(f"legacy table {spec.table!r} does not exist")
            continue
        if spec.status not in table.c:
            problems.append(f"{spec.table}.{spec.status} is already missing")
            continue
        indexed = indexes_a_drop_cannot_keep(conn, table, spec.status)
        if indexed:
            problems.append(
                f"{spec.table}.{spec.status} has index(es) {', '.join(indexed)}: SQLite drops "
                "a column by copying its table, which cannot keep them; drop them first "
                "(the undo does not create them again on SQLite)"
            )
        problems += _dependents(conn, spec.table, spec.status, legacy_table_sql(conn, spec))
        lost = _unrestorable(conn, system, table.c[spec.id], table.c[spec.status])
        if lost:
            problems.append(
                f"{lost} row(s) of {spec.table} could not be restored by the undo (no unified "
                "row, or no legacy_status on it): backfill / repair them first"
            )
        drift = _drifted(conn, system, table.c[spec.id], table.c[spec.status], system in projected)
        if drift:
            problems.append(
                f"{drift} row(s) of {spec.table} have a status that differs from their "
                "unified row's legacy_status, so the undo would restore the wrong value "
                "(legacy_status_drift: a legacy-only change that kept the unified status): "
                "run `unistatus repair --strategy legacy_wins --reason TEXT` (it fixes this "
                "kind in UNIFIED_ONLY too), then retire"
            )
    return problems


def _dependents(conn: sa.Connection, table: str, column: str, rel: str) -> list[str]:
    """What of the application's the drop of ``table.column`` would fail on (a view over
    it: :func:`unistatus.db.column_dependents.drop_column_dependents`), as a refusal."""
    found = drop_column_dependents(conn, rel, table, column)
    problems = []
    if reading := pg_triggers_reading(conn, rel, column):  # so does revision 0006's copy
        problems.append(
            f"{table}.{column} is read by {', '.join(reading)}: the function reads "
            f"NEW.{column} or OLD.{column}, so after the drop every write the trigger fires "
            "on would fail ('record \"new\" has no field'); drop the trigger or change its "
            "function first, and create it again after an undo"
        )
    triggers = sqlite_triggers_naming(conn, table, column)
    if triggers:
        # Revision 0006 refuses them too (its frozen copy of this message).
        problems.append(
            f"{table}.{column}: trigger(s) {', '.join(triggers)} on {table} name the "
            "column: SQLite drops a column by copying its table, and the triggers created "
            "again after the copy would fail each write they fire on without it; drop them "
            "first (the others on the table are kept), create them again after an undo"
        )
    if not found:
        return problems
    if conn.dialect.name == "sqlite":
        return [
            f"{table}.{column}: {', '.join(found)} name(s) {table}: SQLite drops a column by "
            "copying its table, which a view or another table's trigger naming the table "
            "fails; drop them first and create them again after the retirement",
            *problems,
        ]
    return [
        f"{table}.{column} is used by {', '.join(found)}: a column other objects depend on "
        "cannot be dropped; drop them first (a reader of the status can use "
        "`--compat-views`), and create them again after an undo",
        *problems,
    ]


def _unrestorable(
    conn: sa.Connection,
    system: LegacySystemType,
    id_col: sa.Column[Any],
    status_col: sa.Column[Any],
) -> int:
    table = id_col.table
    join = sa.and_(U.c.legacy_system == system.value, U.c.legacy_id == id_col)
    q = (
        sa.select(sa.func.count())
        .select_from(table.outerjoin(U, join))
        .where(
            sa.or_(U.c.id.is_(None), sa.and_(U.c.legacy_status.is_(None), status_col.is_not(None)))
        )
    )
    return int(conn.execute(q).scalar_one())


def _drifted(
    conn: sa.Connection,
    system: LegacySystemType,
    id_col: sa.Column[Any],
    status_col: sa.Column[Any],
    project_pending: bool,
) -> int:
    """Legacy rows whose status is not exactly the ``legacy_status`` the undo refills.

    A row with a change awaiting replay is compared as it will be after the replay
    (:func:`unistatus.migration.check.projected_legacy_status`, needed only while some change
    awaits replay): legacy is frozen in UNIFIED_ONLY and ``legacy_status`` already holds
    the newer value, which is what must come back.
    """
    text = as_text(status_col, conn.dialect.name)
    status = projected_legacy_status(text) if project_pending else text
    table = id_col.table
    join = sa.and_(U.c.legacy_system == system.value, U.c.legacy_id == id_col)
    q = (
        sa.select(sa.func.count())
        .select_from(table.join(U, join))
        .where(
            U.c.legacy_status.is_not(None),
            status.is_distinct_from(U.c.legacy_status),
        )
    )
    return int(conn.execute(q).scalar_one())


def _archive_problems(engine: sa.Engine, settings: Settings) -> list[str]:
    """Re-verify the recorded archive against the live legacy tables, now."""
    recorded = recorded_archive(engine)
    if recorded is None or "path" not in recorded:
        return []  # reported by blockers()
    path = str(recorded["path"])
    try:
        manifest = read_manifest(path)
        report = verify_archive(engine, path)
    except InputError as exc:
        return [f"the recorded archive cannot be read: {exc}"]
    problems = [f"archive {path}: {p}" for p in report.problems]
    if manifest.sha256 != recorded.get("manifest_sha256"):
        problems.append(f"archive {path}: its manifest changed since it was verified")
    # Every status column must be in it: one exported while the columns were retired
    # verifies (it compares its own columns) but holds no status to fall back on.
    problems += [f"archive {path}: {gap}" for gap in status_gaps(manifest, settings)]
    return problems


def status_checksum(engine: sa.Engine, settings: Settings) -> dict[str, Any]:
    """sha256 of (system, id, status) over every legacy row, in id order, and the count."""
    tables = resolve_legacy_tables(engine, settings)
    digest = hashlib.sha256()
    rows = 0
    with engine.connect() as conn:
        for system, lt in tables.items():
            assert lt.status is not None
            q = sa.select(lt.id, lt.read("status")).order_by(lt.id)
            # Streamed by the statement's options, as archive.live_lines reads.
            for legacy_id, status in conn.execute(q, execution_options={"yield_per": 5000}):
                digest.update(f"{system.value}|{legacy_id}|{status}\n".encode())
                rows += 1
    return {"sha256": digest.hexdigest(), "rows": rows}


def retire_legacy_columns(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str = "cli",
    reason: str = "phase 4 cleanup: legacy status columns retired",
    compat: bool = False,
) -> dict[str, Any]:
    """Drop the legacy status columns (revision 0006), or raise GateError saying why not.

    ``compat``: then leave a view per legacy table in schema ``unistatus_compat`` that
    serves the status from ``unified_transactions.legacy_status``
    (:mod:`unistatus.migration.compat_views`; PostgreSQL only, an InputError before
    anything changes elsewhere). Given again once the columns are dropped, it (re)creates
    the views.
    """
    if compat:
        compat_views.require_schemas(engine)
        compat_views.require_distinct_names(engine, settings)
    if legacy_columns_dropped(engine, settings):
        return _already_dropped(engine, settings, actor, reason, compat)
    command = RETIRE_COMMAND + (" --compat-views" if compat else "")

    def gates(bounded: sa.Engine) -> dict[str, Any]:
        with bounded.connect() as conn:
            problems = blockers(conn, settings)
        problems += _archive_problems(bounded, settings)
        if problems:
            raise GateError(
                "refusing to drop the legacy status columns (nothing changed): "
                + "; ".join(problems)
            )
        return status_checksum(bounded, settings)

    try:
        # Behind a session holding a table they read ACCESS EXCLUSIVE (another
        # migration's DDL, a LOCK TABLE), as the attempts wait: then named.
        before = read_politely(
            engine,
            gates,
            lock_ms=attempt_ms(settings),
            what=DROP_WHAT,
            command=command,
            wait_seconds=settings.mode_lock_wait_seconds,
        )
    except (UnistatusError, sa.exc.DBAPIError):
        # Another run (a retried step, a second process) dropped them since the first
        # look: its gates then met the columns gone (a refusal blaming them, or the
        # database's own error on the checksum). What happened is that they are dropped.
        if legacy_columns_dropped(engine, settings):
            return _already_dropped(engine, settings, actor, reason, compat)
        raise
    _check_change(actor, reason)
    order = compat_views.column_order(engine, settings) if compat else None
    views: dict[str, Any] = {}

    def after(conn: sa.Connection) -> None:
        if compat:  # in the drop's transaction: no reader meets a table without its status
            types = dropped_types(conn)
            views.update(
                compat_views.create_compat_views_in(
                    conn, settings, actor=actor, reason=reason, order=order, types=types
                )
            )
        _after_the_drop(conn)  # last: it locks the control table

    deadline, polite = politely(settings, command)
    try:
        revision = schema.upgrade(
            engine,
            settings,
            RETIRE_REVISION,
            attributes={"actor": actor, "reason": reason},
            before=lambda conn: _before_the_drop(conn, settings, deadline),
            after=after,
            **polite,
        )
    except _DoneMeanwhile:
        return _already_dropped(engine, settings, actor, reason, compat)
    result: dict[str, Any] = {
        "dropped": True,
        "already_dropped": False,
        "revision": revision,
        "tables": _columns(settings),
        "checksum_before": before,
        "detail": None,
    }
    if compat:
        result["compat_views"] = views
    return result


class _DoneMeanwhile(Exception):
    """Raised in the migration's transaction, once it holds the lock every retirement and
    undo takes (PostgreSQL: the installation's mode lock, exclusive; SQLite: the write
    lock of its BEGIN IMMEDIATE), when another run did the change first: the transaction
    rolls back, nothing changed, and the caller reports the change as already done (its
    Alembic command would have done nothing, and been reported as done)."""


_ALREADY_DROPPED = "the legacy status columns are already dropped"
_ALREADY_IN_PLACE = "the legacy status columns are in place"


def _already_dropped(
    engine: sa.Engine, settings: Settings, actor: str, reason: str, compat: bool
) -> dict[str, Any]:
    """A retirement's answer when the columns were dropped already (before it, or by
    another run meanwhile): the keys of a drop's answer, nothing dropped."""
    done: dict[str, Any] = {
        "dropped": False,
        "already_dropped": True,
        "revision": RETIRE_REVISION,
        "tables": _columns(settings),
        "checksum_before": None,
        "detail": _ALREADY_DROPPED,
    }
    if compat:
        _check_change(actor, reason)
        done["compat_views"] = _views_again(engine, settings, actor, reason)
    return done


# In the drop's transaction, around its revision: no write to a legacy table from its
# gates' re-check to its commit, and the capture's triggers that read the status columns
# gone with them (every bypass write until then mirrored into unified; if the drop is
# refused or fails, they stay).


def _before_the_drop(conn: sa.Connection, settings: Settings, deadline: Deadline) -> None:
    """PostgreSQL: the installation's mode lock and each legacy table's SHARE lock, the
    polite way and in one attempt (:meth:`DialectOps.mode_exclusive_lock`): no adapter
    write in flight, and no write to a legacy table until the drop commits (readers go
    on). A write committed after the gates' re-check read its table (so unseen by it)
    would otherwise be dropped with the column: a change no unified row holds, lost.
    At the retirement's deadline (``mode_lock_wait_seconds`` from its start, attempts
    included: :meth:`Deadline.mode_lock`) a ``ModeLockBusyError`` names the sessions,
    nothing changed. The revision's own ``pg_advisory_xact_lock`` then finds the lock held.

    Then the capture's triggers that name the status columns go (the others after the
    drop: :func:`_after_the_drop`).

    SQLite: the transaction holds the write lock from its start; the capture's triggers
    go first, as the revision's table copy re-checks every trigger that names the table.
    """
    if conn.dialect.name != "postgresql":
        if columns_retired(conn):  # another run dropped them since this one's gates
            raise _DoneMeanwhile
        capture.retire_in(conn)
        return
    tables = [legacy_table_sql(conn, spec) for spec in settings.legacy_tables.values()]
    deadline.mode_lock(conn, share_locked=tables)
    if columns_retired(conn):  # READ COMMITTED: what the run that held the lock did
        raise _DoneMeanwhile
    # Held so, no legacy write comes between: the triggers that name the status columns
    # (a column a trigger names cannot be dropped) go now, the rest after the drop.
    capture.release_status_columns_in(conn)


def _after_the_drop(conn: sa.Connection) -> None:
    """PostgreSQL: the capture's triggers that read the dropped columns go. The catch-up's
    is on the control table, whose ACCESS EXCLUSIVE lock it then takes for the last
    moments of the drop's transaction: behind a transaction that read that table the
    attempt is rolled back and tried again (:func:`~unistatus.migration.retire_locks.politely`),
    nothing changed."""
    if conn.dialect.name == "postgresql":
        capture.retire_in(conn)


def dropped_types(bind: sa.Engine | sa.Connection) -> dict[LegacySystemType, str]:
    """The SQL type each dropped status column had, where it was the application's own
    (an enum, a domain), as the drop recorded it (revision 0006's control-log row; on a
    connection, as its transaction sees it: the drop's own)."""
    for change in history(bind, key=CONTROL_KEY, limit=50):
        if change.new_value == "dropped":
            recorded = change.metadata or {}
            return {
                LegacySystemType(system): info["type"]
                for system, info in recorded.items()
                if isinstance(info, dict) and info.get("type")
            }
    return {}


def drop_compat_views(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str = "cli",
    reason: str = "compatibility views dropped",
) -> dict[str, Any]:
    """Drop the compatibility views (the columns stay as they are)."""
    compat_views.require_schemas(engine)
    _check_change(actor, reason)
    with ops_for(engine).write_transaction() as conn:
        dropped = _drop_views_first(conn, settings, actor, reason)
    return {"schema": compat_views.COMPAT_SCHEMA, "dropped": dropped}


def _views_again(engine: sa.Engine, settings: Settings, actor: str, reason: str) -> dict[str, Any]:
    """The views made again over retired columns: under the mode lock (an undo waits),
    and only while the columns are still retired (an undo may have just committed)."""
    ops = ops_for(engine)
    with ops.write_transaction() as conn:
        ops.mode_shared_lock(conn)
        if not columns_retired(conn):
            raise GateError(
                "the legacy status columns were restored meanwhile (`retire legacy-columns "
                "--undo`, or a rollback): no views made"
            )
        return compat_views.create_compat_views_in(
            conn, settings, actor=actor, reason=reason, types=dropped_types(conn)
        )


def undo_cleanup(
    engine: sa.Engine,
    settings: Settings,
    *,
    actor: str = "cli",
    reason: str = "legacy status columns restored",
) -> dict[str, Any]:
    """Restore the legacy status columns (downgrade 0006) and refill them exactly; the
    compatibility views go too (a reader that has them first in its search_path then
    reads the tables again)."""
    if not legacy_columns_dropped(engine, settings):
        return _nothing_to_undo(engine, settings)
    _check_change(actor, reason)
    views: list[str] = []
    unfilled: list[str] = []  # the legacy rows the refill leaves NULL, said in the notes
    deadline, polite = politely(settings, UNDO_COMMAND)

    def before(conn: sa.Connection) -> None:
        # The views' readers end first, with the mode lock's polite attempts (no writer
        # held back while one reads on: the lock is let go between attempts), within
        # the undo's deadline.
        deadline.mode_lock(conn, exclusive_locked=compat_views.views_to_drop(conn, settings))
        if not columns_retired(conn):  # another undo restored them since the first look
            raise _DoneMeanwhile
        unfilled[:] = rows_without_a_status(conn, settings)
        # Replaced, not extended: an attempt the migration tries again runs this again.
        views[:] = _drop_views_first(conn, settings, actor, reason)

    try:
        revision = schema.downgrade(
            engine,
            settings,
            schema.RETIRE_UNDO,
            attributes={"actor": actor, "reason": reason},
            before=before,
            after=lambda conn: capture.restore_in(conn, settings),
            **polite,
        )
    except _DoneMeanwhile:
        return _nothing_to_undo(engine, settings)
    undone = _undone(engine, settings)
    return {
        "undone": True,
        "revision": revision,
        "tables": _columns(settings),
        "checksum_after": status_checksum(engine, settings),
        "compat_views_dropped": views,
        **undone,
        "notes": [*unfilled, *undone["notes"]],
        "detail": None,
    }


def _nothing_to_undo(engine: sa.Engine, settings: Settings) -> dict[str, Any]:
    """An undo's answer when the columns are in place (never dropped, or restored by
    another run meanwhile): the keys of an undo's answer, nothing restored."""
    return {
        "undone": False,
        "revision": schema.current_revision(engine),
        "tables": _columns(settings),
        "checksum_after": None,
        "compat_views_dropped": [],
        "pending_covered": 0,
        "notes": [],
        "detail": _ALREADY_IN_PLACE,
    }


def _undone(engine: sa.Engine, settings: Settings) -> dict[str, Any]:
    """What the undo's control-log row says: how many changes awaiting replay its refill
    wrote to legacy (so marked replayed), and what it could not restore (``notes``)."""
    restored: dict[str, Any] = {}
    for change in history(engine, key=CONTROL_KEY, limit=1):
        if change.new_value == "restored":
            restored = {k: v for k, v in (change.metadata or {}).items() if isinstance(v, dict)}
    notes = [
        f"{settings.legacy_tables[system].table}.{settings.legacy_tables[system].status}: its "
        "DEFAULT, indexes and constraints were not recorded (retired before they were): not "
        "restored; create any it had again by hand"
        for system, info in restored.items()
        if info.get("definitions") == "not recorded" and system in settings.legacy_tables
    ]
    covered = sum(int(info.get("pending_covered") or 0) for info in restored.values())
    return {"pending_covered": covered, "notes": notes}


def _drop_views_first(
    conn: sa.Connection, settings: Settings, actor: str, reason: str
) -> list[str]:
    """The compatibility views dropped in the transaction of ``conn`` (an undo's: before
    the tables are touched, since a reader locks a view, then the tables under it, and an
    undo that held the tables while it waited for a view would deadlock with it; or
    ``--compat-views --undo``'s own). A reader still in a view
    after ``lock_timeout_ms`` (0: the server's own lock_timeout), or one that waits for
    this transaction in turn (a deadlock): a StorageError, nothing changed."""
    if conn.dialect.name == "postgresql" and settings.lock_timeout_ms > 0:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(settings.lock_timeout_ms)}")
    try:
        return compat_views.drop_compat_views_in(conn, settings, actor=actor, reason=reason)
    except sa.exc.OperationalError as exc:
        why = retry_reason(exc)
        if why not in ("lock timeout", "deadlock"):
            raise
        raise StorageError(
            f"dropping the compatibility views ({compat_views.COMPAT_SCHEMA}) met a reader "
            f"of them ({why}: it held a view longer than lock_timeout_ms, or waited for this "
            "transaction in turn): nothing was changed; retry, or end that reader's "
            "transaction"
        ) from None


def _check_change(actor: str, reason: str) -> None:
    """The rule :func:`unistatus.db.control.write_value` applies to every recorded change
    (revision 0006 records its own, and falls back to defaults when given blanks)."""
    if not reason or not reason.strip():
        raise InputError(f"changing {CONTROL_KEY} needs a reason (--reason)")
    if not actor or not actor.strip():
        raise InputError("an actor is required")


def _columns(settings: Settings) -> list[str]:
    specs = [settings.legacy_tables[system.value] for system in LegacySystemType]
    return [f"{spec.table}.{spec.status}" for spec in specs]
