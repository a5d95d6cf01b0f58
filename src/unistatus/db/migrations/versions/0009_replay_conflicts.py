"""Replayed changes kept as conflicts (issue 10, section 1).

Placeholder in the chain 0007 -> 0008 -> 0009 -> 0010 -> 0006 (retirement stays last);
filled in by the change that needs it.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
