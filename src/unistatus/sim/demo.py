"""The end-to-end demo (``unistatus demo``): the whole migration in miniature.

Runs every step of :mod:`unistatus.sim.demo_steps` (phase 1 to 4, with live traffic,
the rollback drills, the archive and the cleanup) with :mod:`unistatus.sim.demo_runner`.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console

from unistatus.sim.demo_runner import DemoReport, DemoStep, run_steps
from unistatus.sim.demo_steps import MIGRATION_STEPS

__all__ = ["run_demo"]


def run_demo(
    database_url: str | None = None,
    *,
    console: Console | None = None,
    rows: int = 2000,
    seconds: float = 4.0,
    threads: int = 4,
    steps: Sequence[DemoStep] | None = None,
    soak_seconds: float = 2.0,
) -> DemoReport:
    """Run the demo steps in order; stop at the first failure. Never raises for a step.

    The default steps are the whole migration (:data:`MIGRATION_STEPS`). Without
    ``database_url`` everything happens in a temporary SQLite file that is removed
    afterwards. ``soak_seconds`` shortens the time unified primary must run before
    phase 4 (an hour by default in production).
    """
    return run_steps(
        MIGRATION_STEPS if steps is None else steps,
        database_url,
        console=console,
        rows=rows,
        seconds=seconds,
        threads=threads,
        soak_seconds=soak_seconds,
    )
