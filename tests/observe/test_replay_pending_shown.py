"""During phase 4 both dashboards show how many changes a rollback would replay."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from rich.console import Console

from support.phases import to_phase
from unistatus.adapter.core import DualWriteAdapter
from unistatus.api.service import create_app
from unistatus.domain.statuses import UnifiedTransactionType
from unistatus.migration.replay import pending_count
from unistatus.observe.terminal_dashboard import frame


def terminal(db: Any) -> str:
    console = Console(width=80, record=True, color_system=None)
    console.print(frame(db.engine, db.settings))
    return console.export_text()


def test_phase_4_shows_the_changes_a_rollback_would_replay(db: Any) -> None:
    assert "rollback would replay" not in terminal(db)  # not in phase 4: nothing to say
    to_phase(db.engine, 4)
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    for user in (5, 6):
        created = adapter.create_transaction(
            UnifiedTransactionType.EXCHANGE, user, Decimal("12.5"), "USDT"
        )
        assert created.overall_success
    assert pending_count(db.engine) == 2
    assert re.search(r"rollback would replay +2 changes", terminal(db))
    with TestClient(create_app(db.settings, db.engine)) as client:
        body = client.get("/api/v1/status").json()
    assert body["data_quality"]["replay_pending"] == 2
