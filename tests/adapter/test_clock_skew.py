"""An adapter on a host whose clock is behind the database's stamps the rows it changes
in the past: past continuous verification's 60 s of slack they were never verified,
and nothing said why (a probe: 200 transactions of an adapter ten minutes behind).
The adapter says so when it starts."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest

from conftest import Database
from unistatus import DualWriteAdapter
from unistatus.clock import utcnow
from unistatus.db import server_clock


@pytest.mark.postgres
@pytest.mark.parametrize("minutes", [-10, 0], ids=["ten-minutes-behind", "in-step"])
def test_an_adapter_says_when_its_hosts_clock_is_off(
    pg: Database, minutes: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server_clock, "utcnow", lambda: utcnow() + timedelta(minutes=minutes))
    with caplog.at_level(logging.WARNING, logger="unistatus"):
        adapter = DualWriteAdapter(pg.engine, settings=pg.settings)
    adapter.close()
    said = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    if minutes:
        assert said and re.search(r"\b(599|60\d)\.\d s behind the database", said[0]), said
    else:
        assert not said, said
