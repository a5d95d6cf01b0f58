"""The CLI run in-process against one database, for the backfill command tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from unistatus.cli import app

runner = CliRunner()
UNISTATUS = str(Path(sys.executable).parent / "unistatus")


def cli(url: str, *args: str) -> Result:
    return runner.invoke(app, ["--database-url", url, *args], catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
