"""The CLI run in-process against one database, for the backfill command tests."""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from unistatus.cli import app

runner = CliRunner()
UNISTATUS = str(Path(sys.executable).parent / "unistatus")


@pytest.fixture(autouse=True)
def _release_connections() -> Iterator[None]:
    yield
    gc.collect()  # each CLI invocation builds its own engine


def cli(url: str, *args: str) -> Result:
    return runner.invoke(app, ["--database-url", url, *args], catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
