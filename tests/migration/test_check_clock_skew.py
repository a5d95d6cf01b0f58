"""`check --since` on a host whose clock is behind the database's: an age ("2m") was
turned into a time on the database's clock, then judged again on the host's, "in the
future", and refused after the run was stored (a probe: a host 5 minutes behind; the
stored run then taken by the next `check --resume`). The database's clock decides."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from support.check_data import populate
from unistatus.cli import app
from unistatus.clock import utcnow
from unistatus.migration import check_times
from unistatus.migration.check import run_check
from unistatus.migration.check_runs import latest_unfinished


@pytest.fixture
def host_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's clock five minutes behind the database's."""
    monkeypatch.setattr(check_times, "utcnow", lambda: utcnow() - timedelta(minutes=5))


def test_an_age_is_judged_on_the_databases_clock(db: Any, host_behind: None) -> None:
    populate(db.engine, db.settings, 10)
    report = run_check(db.engine, db.settings, since="2m")
    assert report.complete and report.since is not None
    with db.engine.connect() as conn:
        assert latest_unfinished(conn) is None  # nothing left for a --resume to take


def test_an_iso_time_just_before_the_databases_now_is_taken(db: Any, host_behind: None) -> None:
    populate(db.engine, db.settings, 10)
    just_before = (utcnow() - timedelta(seconds=10)).isoformat()
    result = CliRunner().invoke(app, ["--database-url", db.url, "check", "--since", just_before])
    assert result.exit_code == 0, result.output
