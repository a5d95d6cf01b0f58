"""Idempotency keys of creates (issue 10, section 4).

Placeholder in the chain 0007 -> 0008 -> 0009 -> 0010 -> 0006 (retirement stays last);
filled in by the change that needs it.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
