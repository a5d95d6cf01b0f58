"""`monitor` and `serve` share the continuous verification options, with the library's
defaults, and `serve` hands them to its background monitor."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from unistatus.api.service import create_app
from unistatus.cli import app
from unistatus.cli.verify_options import (
    DEFAULT_VERIFY_BUSY_WAIT,
    DEFAULT_VERIFY_ROWS,
    DEFAULT_VERIFY_SECONDS,
    VerifyBusyWait,
)
from unistatus.migration.verify import (
    BUSY_PACE,
    DEFAULT_BUSY_MAX_WAIT,
    DEFAULT_ROWS_PER_ROUND,
    DEFAULT_SECONDS_PER_ROUND,
)


def test_the_cli_defaults_are_the_librarys() -> None:
    assert (DEFAULT_VERIFY_ROWS, DEFAULT_VERIFY_SECONDS, DEFAULT_VERIFY_BUSY_WAIT) == (
        DEFAULT_ROWS_PER_ROUND,
        DEFAULT_SECONDS_PER_ROUND,
        DEFAULT_BUSY_MAX_WAIT,
    )
    assert f"{BUSY_PACE:g}x the last pass" in " ".join(  # the help names the pace
        str(VerifyBusyWait.__metadata__[0].help).split()
    )


@pytest.mark.parametrize("command", ["monitor", "serve"])
def test_monitor_and_serve_offer_both_options(command: str) -> None:
    done = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    for option in ("--verify-rows", "--verify-seconds", "--verify-busy-wait"):
        assert option in done.output


def test_the_service_monitor_verifies_within_the_bounds_given(db: Any) -> None:
    from fastapi.testclient import TestClient

    application = create_app(
        db.settings,
        db.engine,
        monitor_interval=3600,
        verify_rows=123,
        verify_seconds=0.5,
        verify_busy_wait=7.0,
    )
    with TestClient(application):
        monitor = application.state.service.monitor
        assert monitor is not None
        assert (monitor.verify_rows, monitor.verify_seconds) == (123, 0.5)
        assert monitor.verify_busy_wait == 7.0


def test_serve_refuses_a_bound_out_of_range() -> None:
    done = CliRunner().invoke(app, ["serve", "--verify-seconds", "0"])
    assert done.exit_code == 2
    assert "--verify-seconds" in done.output


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--monitor-interval", "inf"],
        ["serve", "--monitor-interval", "nan"],
        ["monitor", "--interval", "inf", "--count", "2"],
        ["monitor", "--interval", "nan", "--count", "2"],
        ["serve", "--verify-busy-wait", "inf"],
        ["serve", "--log-level", "bogus"],
    ],
)
def test_a_time_that_cannot_be_waited_or_an_unknown_log_level_is_refused_at_start(
    args: list[str], tmp_path: Any
) -> None:
    """``--monitor-interval inf`` let the service start and its monitor thread die
    with an OverflowError after the first evaluation; ``monitor --interval inf`` ended
    with "unexpected OverflowError"; ``--log-level bogus`` with "unexpected KeyError"
    (exploratory review). Each is refused at start, the option named, exit 2."""
    url = f"sqlite:///{tmp_path / 'none.db'}"
    done = CliRunner().invoke(app, ["--database-url", url, *args])
    assert done.exit_code == 2, done.output
    assert args[1] in done.output, done.output
    assert "unexpected" not in done.output
