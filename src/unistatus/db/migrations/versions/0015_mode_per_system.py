"""mode per system: each legacy system has its own write mode and its own mode lock.

- Data: the control key ``mode.<SYSTEM>`` (``mode.CASHOUT``, ``mode.ESCROW``,
  ``mode.EXCHANGE``) holds each system's mode. A database with the one global ``mode``
  gets every system in that mode (no control-log row: the mode did not change, and the
  last change stays the one that set it). ``mode`` itself stays, as a summary kept by
  unistatus: the mode of every system while they agree, absent while they differ; a
  system without a key of its own reads it (unistatus writes the three keys together).
- PostgreSQL: ``unistatus_locked_mode(system text)`` takes the installation's mode lock
  shared, then the system's own lock shared (a key derived from the installation's),
  reads that system's mode in a new snapshot, and sets the writer mark to it. A switch of
  one system takes that system's lock exclusive (and the installation's shared): it
  waits for that system's writers only. A switch of every system, the replay and the
  retirement take the installation's lock exclusive: they wait for every writer.
  ``unistatus_locked_mode()`` (no argument, revisions 0007 and 0011) is left as it was:
  it reads the summary.

The downgrade refuses while the systems are in different modes (the global key could
not say which), then drops the per-system keys and the function.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# --- frozen at this revision (unistatus.db.mode_lock_keys.MODE_LOCK_KEY / system_lock_key,
# unistatus.db.control.MODE_KEY / mode_key / DEFAULT_MODE, the writer mark's setting).
SYSTEMS = ("CASHOUT", "ESCROW", "EXCHANGE")
MODE_KEY = "mode"
DEFAULT_MODE = "LEGACY_ONLY"
MODE_LOCK_KEY = 0x756E6973
WRITER_SETTING = "unistatus.writer"
UTC_TIME = sa.DateTime(timezone=True)

LOCKED_MODE_OF_SYSTEM = f"""
CREATE OR REPLACE FUNCTION {{function}}(p_system text) RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    current_mode text;
BEGIN
    IF p_system IS NULL OR p_system NOT IN ({{systems}}) THEN
        RAISE EXCEPTION 'unknown legacy system %', p_system USING ERRCODE = '22023';
    END IF;
    -- Both held until the transaction ends: the installation's lock (a switch of every
    -- system, the replay, the retirement wait for it) and the system's (a switch of
    -- this system waits for it, or this for the switch).
    PERFORM pg_advisory_xact_lock_shared({{key}});
    PERFORM pg_advisory_xact_lock_shared(CASE p_system {{cases}} END);
    -- A VOLATILE function's query takes a new snapshot: a switch that committed while
    -- the locks were awaited is seen.
    current_mode := coalesce(
        (SELECT value FROM {{control}} WHERE key = '{MODE_KEY}.' || p_system),
        (SELECT value FROM {{control}} WHERE key = '{MODE_KEY}'),
        '{DEFAULT_MODE}'
    );
    -- The writer mark: this transaction writes for unistatus, under this mode.
    PERFORM set_config('{WRITER_SETTING}', current_mode, true);
    RETURN current_mode;
END
$$
"""


def system_lock_key(key: int, system: str) -> int:
    """The mode lock of ``system`` in the installation whose lock is ``key``: never
    ``key`` itself, and positive 64-bit like it."""
    return key ^ ((zlib.crc32(system.encode()) << 1) | 1)


def _schema() -> str | None:
    schema: str | None = context.config.attributes.get("schema")
    return schema


def _named(name: str) -> str:
    schema = _schema()
    return name if schema is None else f"{schema}.{name}"


def _control() -> sa.TableClause:
    return sa.table(
        "unistatus_control",
        sa.column("key", sa.String),
        sa.column("value", sa.String),
        sa.column("updated_at", UTC_TIME),
        sa.column("updated_by", sa.String),
        schema=_schema(),
    )


def _values(bind: sa.Connection) -> dict[str, str]:
    control = _control()
    keys = [MODE_KEY, *(f"{MODE_KEY}.{s}" for s in SYSTEMS)]
    rows = bind.execute(sa.select(control.c.key, control.c.value).where(control.c.key.in_(keys)))
    return {str(k): str(v) for k, v in rows}


def upgrade() -> None:
    bind = op.get_bind()
    values = _values(bind)
    if MODE_KEY in values:
        control = _control()
        now = datetime.now(UTC)
        missing = [s for s in SYSTEMS if f"{MODE_KEY}.{s}" not in values]
        for system in missing:
            bind.execute(
                sa.insert(control).values(
                    key=f"{MODE_KEY}.{system}",
                    value=values[MODE_KEY],
                    updated_at=now,
                    updated_by="revision 0015",
                )
            )
    if bind.dialect.name == "postgresql":
        key = int(context.config.attributes.get("mode_lock_key", MODE_LOCK_KEY))
        op.execute(
            LOCKED_MODE_OF_SYSTEM.format(
                function=_named("unistatus_locked_mode"),
                control=_named("unistatus_control"),
                key=key,
                systems=", ".join(f"'{s}'" for s in SYSTEMS),
                cases=" ".join(f"WHEN '{s}' THEN {system_lock_key(key, s)}" for s in SYSTEMS),
            )
        )


def downgrade() -> None:
    bind = op.get_bind()
    values = _values(bind)
    modes = {s: values.get(f"{MODE_KEY}.{s}", DEFAULT_MODE) for s in SYSTEMS}
    if len(set(modes.values())) > 1:
        refused: type[Exception] = context.config.attributes.get("gate_error", RuntimeError)
        raise refused(
            "the systems are in different modes ("
            + ", ".join(f"{s} {m}" for s, m in modes.items())
            + "): before revision 0015 one mode held for all; switch them to one mode first"
        )
    control = _control()
    bind.execute(sa.delete(control).where(control.c.key.in_([f"{MODE_KEY}.{s}" for s in SYSTEMS])))
    common = next(iter(modes.values()))
    if MODE_KEY not in values and common != DEFAULT_MODE:
        bind.execute(
            sa.insert(control).values(
                key=MODE_KEY,
                value=common,
                updated_at=datetime.now(UTC),
                updated_by="revision 0015 downgrade",
            )
        )
    if bind.dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {_named('unistatus_locked_mode')}(text)")
