"""locked mode function: the mode lock and a fresh read of the mode, in one SQL call.

PostgreSQL only (SQLite serialises writers with BEGIN IMMEDIATE and needs no lock).

``unistatus_locked_mode()`` takes the shared mode lock (the advisory lock a mode switch
holds exclusive, :data:`unistatus.db.dialect.MODE_LOCK_KEY`) for the rest of the
transaction, then returns the stored mode. It is VOLATILE, so its query takes a new
snapshot: it sees a switch that committed while the call waited for the lock. A plain
sub-select in the calling statement could not, since that statement's snapshot is older
than the wait. This lets one statement both exclude a mode switch and check the mode,
which is what the adapter's two-round-trip write path needs
(:mod:`unistatus.adapter.fast`).

Revision ids are never renumbered, so the chain is 0005 -> 0007 -> 0006: ``init``
installs up to this revision (``INSTALL_REVISION``), and 0006, the retirement of the
legacy status columns, stays the last one, applied only by ``unistatus retire``. A
database retired (at 0006) before this revision existed never gets the function; the
adapter then keeps to its locked write path (and logs why), so nothing breaks.

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
