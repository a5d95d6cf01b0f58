"""The capture's part in the retirement of the legacy status columns, and in its undo,
each in their transaction: the triggers that name the columns go before the drop
(:func:`release_status_columns_in`), the rest that reads them after it
(:func:`retire_in`), and all of them are back once the undo restored the columns
(:func:`restore_in`). The detector of direct writes to unified stays throughout.

Split from :mod:`unistatus.migration.capture`; the retirement:
:mod:`unistatus.migration.retire`.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.dialect import ops_for
from unistatus.db.tables import unified_transactions
from unistatus.errors import StorageError
from unistatus.migration.capture_catalog import installed
from unistatus.migration.capture_ddl import CaptureDdl
from unistatus.migration.capture_frozen import SHORT as STATUS_TRIGGER
from unistatus.migration.capture_intent import is_enabled, record_mapping
from unistatus.migration.capture_names import PREFIX, Trigger
from unistatus.migration.capture_tables import capturable, install_statements

__all__ = ["release_status_columns_in", "restore_in", "retire_in"]


def retire_in(conn: sa.Connection) -> bool:
    """In the retirement's transaction, once its revision dropped the legacy status
    columns (SQLite: just before, nothing writes meanwhile): the capture's objects that
    read them go (each legacy table's triggers and the catch-up, with their functions);
    the detector of direct writes to unified stays. True if capture is enabled.

    Not before, nor in a transaction of its own: until the columns go every bypass write
    is mirrored into unified (one committed after the drop's gates read the table would
    otherwise go with the column), and if the drop is refused or fails they stay."""
    if not is_enabled(conn):
        return False
    ddl = CaptureDdl(ops_for(conn.engine), conn.dialect)
    for statement in ddl.drop(*_legacy_side(*installed(conn))):
        conn.exec_driver_sql(statement)
    return True


def release_status_columns_in(conn: sa.Connection) -> None:
    """In the retirement's transaction, before its revision drops the legacy status
    columns (PostgreSQL: the drop refuses a column a trigger names): the triggers that
    name them (``UPDATE OF``, :mod:`unistatus.migration.capture_frozen`). The rest stay
    until :func:`retire_in`; if the drop is refused or fails, these are back with it."""
    ddl = CaptureDdl(ops_for(conn.engine), conn.dialect)
    triggers, _ = _legacy_side(*installed(conn))
    naming = [t for t in triggers if t.name.endswith(f"_{STATUS_TRIGGER}")]
    for statement in ddl.drop(naming, []):
        conn.exec_driver_sql(statement)


def restore_in(conn: sa.Connection, settings: Settings) -> bool:
    """In the undo's transaction, once its revision restored the status columns: the
    legacy tables' triggers and the catch-up again (as :func:`retire_in` left it, the
    detector of direct writes to unified in place), so that no bypass write comes
    between the columns' return and the capture's. True if capture is enabled."""
    if not is_enabled(conn):
        return False
    ops = ops_for(conn.engine)
    ddl = CaptureDdl(ops, conn.dialect)
    present, _ = capturable(conn, settings)
    statements = ddl.drop(*_legacy_side(*installed(conn)))
    statements += install_statements(ddl, conn, present, ops.mode_lock_key, unified=False)
    try:
        for statement in statements:
            conn.exec_driver_sql(statement)
    except sa.exc.DBAPIError as exc:
        raise StorageError(
            f"cannot install the capture triggers again ({exc.orig}): the undo was rolled "
            "back, the status columns are still retired"
        ) from None
    record_mapping(conn, "unistatus")
    return True


def _legacy_side(installed: list[Trigger], functions: list[str]) -> tuple[list[Trigger], list[str]]:
    """Of what is installed, what reads the legacy tables' columns: each legacy table's
    triggers and the catch-up (on the control table), with their functions; not the
    detector of direct writes to unified."""
    detector = f"{PREFIX}unified"
    triggers = [t for t in installed if t.table != unified_transactions.name]
    # A function's signature as the catalog gives it: [schema.]name().
    kept = [f for f in functions if f.split("(")[0].split(".")[-1].strip('"') != detector]
    return triggers, kept
