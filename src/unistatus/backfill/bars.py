"""Rich progress bars for a backfill: one per system, with rows/s and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from unistatus.backfill.runner import ProgressCallback


class _RateColumn(ProgressColumn):
    """Rows per second, from Rich's own sliding window of updates."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:>10,.0f} rows/s" if speed else " " * 17, style="cyan")


def backfill_bars(console: Console, *, indent: str = "") -> tuple[Progress, ProgressCallback]:
    """The bars and the ``progress=`` callback for :func:`run_backfill` that drives them.

    Use the returned ``Progress`` as a context manager around the run.
    """
    bars = Progress(
        TextColumn(indent + "[bold]{task.description:<9}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def on_progress(system: str, done: int, total: int) -> None:
        if system not in tasks:
            tasks[system] = bars.add_task(system.lower(), total=total or 1)
        bars.update(tasks[system], completed=done if total else 1, total=total or 1)

    return bars, on_progress
