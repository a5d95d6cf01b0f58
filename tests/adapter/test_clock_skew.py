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


@pytest.mark.postgres
def test_a_clock_corrects_a_host_off_and_leaves_one_in_step_alone(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host minutes off stamps the database's time; one in step keeps its own clock
    (a measure is off by up to half its round trip: corrected by it, a host's stamps
    could step back between two measures; a review)."""
    clock = server_clock.DatabaseClock()
    with pg.engine.connect() as conn:
        clock.measure(conn)
        assert clock.lead == timedelta(0)  # this host is in step with the local server
        monkeypatch.setattr(server_clock, "utcnow", lambda: utcnow() + timedelta(minutes=5))
        lead = clock.measure(conn)
        assert timedelta(minutes=-5, seconds=-1) < lead < timedelta(minutes=-5, seconds=1)
        assert clock.lead == lead
        assert abs(clock.now() - server_clock.database_now(conn)) < timedelta(seconds=1)
