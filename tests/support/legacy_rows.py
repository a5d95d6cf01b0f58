"""Legacy rows written as a bypass writer would, under an id of the test's choosing."""

from __future__ import annotations

import sqlalchemy as sa

T0 = "2026-01-01 00:00:00"


def insert_cashout(engine: sa.Engine, legacy_id: int, status: str = "PENDING") -> None:
    """One cashout row under ``legacy_id`` (plain SQL: no adapter, no unified row)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at,"
                " updated_at) VALUES (:i, 1, 5, 'USD', :s, :t, :t)"
            ),
            {"i": legacy_id, "s": status, "t": T0},
        )
