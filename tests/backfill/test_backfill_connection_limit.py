"""``backfill --workers N`` as a role whose CONNECTION LIMIT is below what N workers
open fails saying how many connections they need, and what a rerun needs (exploratory
DBA: "database failed while reading the backfill jobs: connection failed: ... rerun the
same command to resume", which a rerun met again)."""

from __future__ import annotations

from typing import Any

import pytest

import unistatus
from support.limited_role import a_role_limited_to
from unistatus.backfill import run_backfill
from unistatus.config import load_settings
from unistatus.db.engine import create_engine
from unistatus.sim.seed import seed_legacy


def test_too_many_workers_for_the_roles_limit_says_what_they_need(pg: Any) -> None:
    seed_legacy(pg.engine, pg.settings, 2_000, seed=7)
    with a_role_limited_to(pg, 2) as (role, url):
        settings = load_settings(database_url=url)
        engine = create_engine(url, schema=settings.schema)
        try:
            with pytest.raises(unistatus.StorageError) as raised:
                run_backfill(engine, settings, batch_size=50, workers=4)
        finally:
            engine.dispose()
    said = str(raised.value)
    assert isinstance(raised.value, unistatus.ConnectionLimitError), said
    assert f'too many connections for role "{role}"' in said, said
    assert "--workers 4 opens up to" in said, said
    assert "fewer --workers or a higher CONNECTION LIMIT" in said, said
