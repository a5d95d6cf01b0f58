"""Which token made a change (issue 10, section 2).

Placeholder in the chain 0007 -> 0008 -> 0009 -> 0010 -> 0006 (retirement stays last);
filled in by the change that needs it.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
