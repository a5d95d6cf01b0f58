"""functions name the control table with its schema: they work whatever the search_path.

PostgreSQL only. In the default layout (no ``schema`` setting) revisions 0011, 0015 and
0021 wrote ``unistatus_control`` bare in the bodies of ``unistatus_locked_mode()``,
``unistatus_locked_mode(text)`` and ``unistatus_control_summary_guard()``: PL/pgSQL
resolves a name when the function runs, through the search_path of the session calling
it. pg_dump's output runs with ``search_path = ''``, so a data-only restore into a
database `unistatus init` had installed (the usual way to copy one) lost every row of
the control table: the guard, firing on each, failed ("relation "unistatus_control"
does not exist"); the copy read LEGACY_ONLY, phase 0 while its history ended in dual
write. A session whose search_path lacks our schema failed in the same way.

This revision recreates the three with the control table named in the schema it is in,
resolved now (the ``schema`` setting, or where the search_path finds the table: as the
capture's functions are, unistatus.migration.capture.own_schema), and the functions
themselves in that schema. The bodies are otherwise those of 0011, 0015 and 0021; the
other names they use are built-ins, always found (pg_catalog is searched first whatever
the search_path). The downgrade puts back the bodies as those revisions wrote them.

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa
from alembic import context, op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

# --- frozen at this revision (unistatus.db.mode_lock_keys.MODE_LOCK_KEY / system_lock_key,
# unistatus.db.control.MODE_KEY / DEFAULT_MODE, the writer mark's setting, the systems,
# the summary keys and revision 0021's message).
SYSTEMS = ("CASHOUT", "ESCROW", "EXCHANGE")
MODE_KEY = "mode"
DEFAULT_MODE = "LEGACY_ONLY"
MODE_LOCK_KEY = 0x756E6973
WRITER_SETTING = "unistatus.writer"
SUMMARY_KEYS = ("mode", "phase")
CONTROL = "unistatus_control"
LOCKED_MODE = "unistatus_locked_mode"
GUARD = "unistatus_control_summary_guard"
GUARD_MESSAGE = (
    "unistatus: this database was upgraded by a newer unistatus (revision 0021), whose "
    "mode and phase are each legacy system''s own: the global key may only hold the value "
    "every system has. Run this command with the current version (nothing was changed)"
)

# Revision 0011's body: the summary's mode under the installation's lock, and the mark.
LOCKED_MODE_OF_ALL = f"""
CREATE OR REPLACE FUNCTION {{function}}() RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    current_mode text;
BEGIN
    -- Held until the transaction ends; a mode switch waits for it, or this for the switch.
    PERFORM pg_advisory_xact_lock_shared({{key}});
    -- A VOLATILE function's query takes a new snapshot: a switch that committed while
    -- the lock was awaited is seen.
    current_mode := coalesce(
        (SELECT value FROM {{control}} WHERE key = '{MODE_KEY}'), '{DEFAULT_MODE}'
    );
    -- The writer mark: this transaction writes for unistatus, under this mode.
    PERFORM set_config('{WRITER_SETTING}', current_mode, true);
    RETURN current_mode;
END
$$
"""

# Revision 0015's body: one system's mode under the installation's and the system's locks.
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

# Revision 0021's body: a summary key that disagrees with a system's own key is refused.
_KEYS = ", ".join(f"'{k}'" for k in SUMMARY_KEYS)
SUMMARY_GUARD = f"""
CREATE OR REPLACE FUNCTION {{function}}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.key IN ({_KEYS}) AND EXISTS (
        SELECT 1 FROM {{control}} AS own
        WHERE own.key LIKE NEW.key || '.%' AND own.value <> NEW.value
    ) THEN
        RAISE EXCEPTION '{GUARD_MESSAGE}' USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END
$$
"""


def system_lock_key(key: int, system: str) -> int:
    """The mode lock of ``system`` in the installation whose lock is ``key`` (0015's)."""
    return key ^ ((zlib.crc32(system.encode()) << 1) | 1)


def _resolved_schema(bind: sa.Connection) -> str:
    """The schema our control table is in: the ``schema`` setting's, or where the
    search_path of this session (the operator's `init`) finds it."""
    schema: str | None = context.config.attributes.get("schema")
    if schema is not None:
        return schema
    found = bind.execute(
        sa.text(
            "SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.oid = to_regclass(:table)"
        ),
        {"table": CONTROL},
    ).scalar_one()
    return str(found)


def _install(prefix: str) -> None:
    """The three functions, their names and the control table's prefixed by ``prefix``."""
    key = int(context.config.attributes.get("mode_lock_key", MODE_LOCK_KEY))
    control = f"{prefix}{CONTROL}"
    op.execute(
        LOCKED_MODE_OF_ALL.format(function=f"{prefix}{LOCKED_MODE}", control=control, key=key)
    )
    op.execute(
        LOCKED_MODE_OF_SYSTEM.format(
            function=f"{prefix}{LOCKED_MODE}",
            control=control,
            key=key,
            systems=", ".join(f"'{s}'" for s in SYSTEMS),
            cases=" ".join(f"WHEN '{s}' THEN {system_lock_key(key, s)}" for s in SYSTEMS),
        )
    )
    op.execute(SUMMARY_GUARD.format(function=f"{prefix}{GUARD}", control=control))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        schema = bind.dialect.identifier_preparer.quote(_resolved_schema(bind))
        _install(f"{schema}.")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        schema: str | None = context.config.attributes.get("schema")
        _install("" if schema is None else f"{schema}.")
