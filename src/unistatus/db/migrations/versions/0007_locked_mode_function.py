"""locked mode function: the mode lock and a fresh read of the mode, in one SQL call.

PostgreSQL only: ``unistatus_locked_mode()`` takes the shared mode lock, then reads the
mode in a new snapshot, for the adapter's fast path. Why, and databases retired before
it: docs/adapter.md, "The locked mode function".

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

from alembic import context, op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen copies of the values at this revision (unistatus.db.mode_lock_keys.MODE_LOCK_KEY,
# the control table, unistatus.db.control.MODE_KEY and DEFAULT_MODE). An installation in
# a schema of its own passes its lock key and its schema as config attributes.
MODE_LOCK_KEY = 0x756E6973
FUNCTION = """
CREATE OR REPLACE FUNCTION {function}() RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    -- Held until the transaction ends; a mode switch waits for it, or this for the switch.
    PERFORM pg_advisory_xact_lock_shared({key});
    -- A VOLATILE function's query takes a new snapshot: a switch that committed while
    -- the lock was awaited is seen.
    RETURN coalesce(
        (SELECT value FROM {control} WHERE key = 'mode'), 'LEGACY_ONLY'
    );
END
$$
"""


def _named(name: str) -> str:
    """``name`` in unistatus's schema (the ``schema`` attribute; None: unqualified).

    The setting admits only names that need no quoting, so they are pasted as they are;
    the body names the control table in full, so the function reads the right one
    whatever the search_path of the session calling it.
    """
    schema = context.config.attributes.get("schema")
    return name if schema is None else f"{schema}.{name}"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        key = int(context.config.attributes.get("mode_lock_key", MODE_LOCK_KEY))
        op.execute(
            FUNCTION.format(
                function=_named("unistatus_locked_mode"),
                key=key,
                control=_named("unistatus_control"),
            )
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {_named('unistatus_locked_mode')}()")
