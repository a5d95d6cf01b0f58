"""retire legacy columns: drop the legacy status columns (phase 4 cleanup), reversibly.

Applied ONLY by ``unistatus retire legacy-columns`` (:mod:`unistatus.migration.retire`), never
by ``unistatus init``: :func:`unistatus.db.schema.upgrade` installs up to
``INSTALL_REVISION`` (0009) by default. So ``current`` is honest: 0006 means exactly
"the legacy status columns are dropped", 0009 means they are in place, and head (0006)
is the fully retired schema. (Revision ids are never renumbered: 0007 to 0009, added
later, sit between 0005 and this one.)

upgrade() re-checks the retirement gates inside its own transaction, after taking the
exclusive mode lock (on PostgreSQL it waits for in-flight adapter writes; DDL waits at
most ``lock_timeout_ms`` for its table locks): UNIFIED_ONLY, a recorded verified
archive, every legacy row restorable, and every legacy status exactly equal to its
unified row's ``legacy_status`` (or, where a change awaits replay, that newer value):
no ``legacy_status_drift``, checked while legacy is frozen, right before the drop. So
even ``alembic upgrade head`` run by hand cannot drop the columns early, or drop a
status the undo would not bring back. It records each dropped column's length and
nullability in the control table (key ``legacy_columns``) for the downgrade.

downgrade() adds the columns back and refills each table with one set-based UPDATE
from ``unified_transactions.legacy_status`` (matched by legacy_system + legacy_id),
which the adapter keeps current in every mode that writes unified, and which upgrade()
found equal to every dropped status, so the values come back exactly. (A
restored column comes back last in the table's column order; SQL by name is unaffected.)

SQLite alters tables through ``op.batch_alter_table`` (copy and rename).

Revision ID: 0006
Revises: 0009
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

from unistatus.config import Settings
from unistatus.db.dialect import ops_for
from unistatus.db.tables import control_log, unified_transactions
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import GateError

revision = "0006"
down_revision = "0009"
branch_labels = None
depends_on = None

CONTROL_KEY = "legacy_columns"


def _prepare() -> tuple[sa.Connection, Settings]:
    bind = op.get_bind()
    settings: Settings = context.config.attributes["settings"]
    ops = ops_for(bind.engine)
    ops.bound_statements(bind, 0, settings.lock_timeout_ms)
    ops.mode_exclusive_lock(bind)
    return bind, settings


def _record(bind: sa.Connection, value: str, metadata: dict[str, Any]) -> None:
    from unistatus.db.control import write_value

    attrs = context.config.attributes
    write_value(
        bind,
        CONTROL_KEY,
        value,
        actor=attrs.get("actor") or "alembic",
        reason=attrs.get("reason") or f"revision 0006: legacy status columns {value}",
        metadata=metadata,
    )


def upgrade() -> None:
    from unistatus.migration.retire import blockers

    bind, settings = _prepare()
    problems = blockers(bind, settings)
    if problems:
        raise GateError(
            "revision 0006 refused (run `unistatus retire legacy-columns`): " + "; ".join(problems)
        )
    dropped: dict[str, Any] = {}
    for system in LegacySystemType:
        spec = settings.legacy_tables[system.value]
        column = sa.Table(spec.table, sa.MetaData(), autoload_with=bind).c[spec.status]
        dropped[system.value] = {
            "table": spec.table,
            "column": spec.status,
            "length": getattr(column.type, "length", None),
            "nullable": bool(column.nullable),
        }
        with op.batch_alter_table(spec.table) as batch:
            batch.drop_column(spec.status)
    _record(bind, "dropped", dropped)


def downgrade() -> None:
    bind, settings = _prepare()
    dropped = _dropped_columns(bind)
    restored: dict[str, Any] = {}
    for system in LegacySystemType:
        spec = settings.legacy_tables[system.value]
        info = dropped.get(system.value, {})
        if spec.status not in sa.Table(spec.table, sa.MetaData(), autoload_with=bind).c:
            with op.batch_alter_table(spec.table) as batch:
                batch.add_column(
                    sa.Column(spec.status, sa.String(info.get("length") or 64), nullable=True)
                )
        table = sa.Table(spec.table, sa.MetaData(), autoload_with=bind)
        u = unified_transactions
        legacy_status = (
            sa.select(u.c.legacy_status)
            .where(u.c.legacy_system == system.value, u.c.legacy_id == table.c[spec.id])
            .scalar_subquery()
        )
        result = bind.execute(sa.update(table).values({table.c[spec.status]: legacy_status}))
        if info.get("nullable") is False:
            with op.batch_alter_table(spec.table) as batch:
                batch.alter_column(spec.status, existing_type=sa.String(), nullable=False)
        restored[system.value] = {"table": spec.table, "rows": result.rowcount}
    _record(bind, "restored", restored)


def _dropped_columns(bind: sa.Connection) -> dict[str, Any]:
    """What upgrade() recorded about the columns it dropped ({} if nothing recorded)."""
    meta = bind.execute(
        sa.select(control_log.c.meta)
        .where(control_log.c.key == CONTROL_KEY, control_log.c.new_value == "dropped")
        .order_by(control_log.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return dict(meta) if isinstance(meta, dict) else {}
