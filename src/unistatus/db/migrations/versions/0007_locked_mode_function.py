"""locked mode function: the mode lock and a fresh read of the mode, in one SQL call.

PostgreSQL only: ``unistatus_locked_mode()`` takes the shared mode lock, then reads the
mode in a new snapshot, for the adapter's fast path. Why, and databases retired before
it: docs/adapter.md, "The locked mode function".

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen copies of the values at this revision (unistatus.db.dialect.MODE_LOCK_KEY,
# the control table, unistatus.db.control.MODE_KEY and DEFAULT_MODE).
MODE_LOCK_KEY = 0x756E6973
FUNCTION = f"""
CREATE OR REPLACE FUNCTION unistatus_locked_mode() RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    -- Held until the transaction ends; a mode switch waits for it, or this for the switch.
    PERFORM pg_advisory_xact_lock_shared({MODE_LOCK_KEY});
    -- A VOLATILE function's query takes a new snapshot: a switch that committed while
    -- the lock was awaited is seen.
    RETURN coalesce(
        (SELECT value FROM unistatus_control WHERE key = 'mode'), 'LEGACY_ONLY'
    );
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS unistatus_locked_mode()")
