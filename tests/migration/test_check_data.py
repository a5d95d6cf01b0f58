"""The check fixtures make a consistent copy."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from support.check_data import populate
from unistatus.db.tables import unified_transactions as U


def test_populate_makes_a_consistent_copy(sqlite_db: Any) -> None:
    populate(sqlite_db.engine, sqlite_db.settings, 50)
    assert sqlite_db.count("cashouts") == 50
    assert sqlite_db.count("unified_transactions") == 150
    with sqlite_db.engine.connect() as conn:
        amount = conn.execute(
            sa.select(U.c.amount).where(U.c.legacy_system == "ESCROW", U.c.legacy_id == 4)
        ).scalar_one()
    assert amount == Decimal("5.00")
