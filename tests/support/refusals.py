"""A legacy table unistatus cannot work with is refused at start, with nothing written."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from unistatus.backfill import run_backfill
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.errors import ConfigError


def assert_refused_at_start(db: Any, message: str) -> None:
    """Reflection and the backfill both raise ConfigError matching ``message``; no
    unified row is written."""
    with pytest.raises(ConfigError, match=message):
        resolve_legacy_tables(db.engine, db.settings)
    with pytest.raises(ConfigError, match=message):
        run_backfill(db.engine, db.settings)
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM unified_transactions")).scalar() == 0
