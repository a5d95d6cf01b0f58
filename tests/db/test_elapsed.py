"""Microseconds between timestamps, computed by the database: exact to the microsecond
on SQLite (which keeps milliseconds in its date functions) and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from unistatus.db.elapsed import microseconds_after

MOMENT = datetime(2024, 5, 1, 11, 50, tzinfo=UTC)


@pytest.mark.parametrize(
    "offset",
    [
        timedelta(0),
        timedelta(microseconds=1),
        timedelta(microseconds=-1),
        timedelta(seconds=59, microseconds=999_999),  # not rounded to the next second
        timedelta(seconds=-59, microseconds=-999_999),
        timedelta(days=3, hours=5, microseconds=500),
    ],
)
def test_microseconds_after_a_moment(db: Any, offset: timedelta) -> None:
    at = sa.literal(MOMENT + offset, sa.DateTime(timezone=True))
    with db.engine.connect() as conn:
        got = conn.execute(sa.select(microseconds_after(MOMENT, at))).scalar_one()
    assert got == offset // timedelta(microseconds=1)
