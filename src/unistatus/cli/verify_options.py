"""The continuous verification options `monitor` and `serve` share (docs/check.md).

Their defaults are the library's (``unistatus.migration.verify``), written here again so
that ``--help`` loads no SQLAlchemy; tests/cli/test_verify_options.py holds them equal.
"""

from __future__ import annotations

from typing import Annotated

import typer

DEFAULT_VERIFY_ROWS = 200_000
DEFAULT_VERIFY_SECONDS = 2.0
DEFAULT_VERIFY_BUSY_WAIT = 120.0

VerifyRows = Annotated[
    int,
    typer.Option(
        "--verify-rows",
        min=0,
        help="Continuous verification: rows changed since the last verified point checked "
        "per evaluation and system, at most (0: off). See docs/check.md.",
    ),
]
VerifySeconds = Annotated[
    float,
    typer.Option(
        "--verify-seconds",
        min=0.01,
        max=86_400.0,
        help="Continuous verification: seconds per evaluation and system, at most (a key "
        "range begun is finished); a big table's pass goes on over several evaluations.",
    ),
]
VerifyBusyWait = Annotated[
    float,
    typer.Option(
        "--verify-busy-wait",
        min=0.0,
        max=86_400.0,
        help="Continuous verification beside live traffic (other applications' sessions "
        "at work): a new pass begins 10x the last pass's length after the last began, "
        "this many seconds at most (0: a pass each evaluation, as when quiet).",
    ),
]
