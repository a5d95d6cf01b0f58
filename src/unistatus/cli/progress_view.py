"""Progress of a long command that works one item at a time, on stderr: a live bar on
a terminal, a line every :data:`LINE_EVERY_SECONDS` in a log, nothing under ``--json``
(whose stdout is the report alone)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from unistatus.cli.context import err_console

__all__ = ["LINE_EVERY_SECONDS", "ItemProgress", "item_progress"]

# In a log (stderr not a terminal): how often a line says how far the command got.
LINE_EVERY_SECONDS = 10.0

# done, total (None: not known ahead), and what the count is of (a word or two).
ItemProgress = Callable[[int, int | None], None]


@contextmanager
def item_progress(label: str, unit: str, *, json_out: bool) -> Iterator[ItemProgress]:
    """A callback ``(done, total)`` showing ``label``'s progress in ``unit``s while the
    block runs."""
    if json_out:
        yield lambda done, total: None
        return
    if not err_console.is_terminal:
        yield _lines(label, unit)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        f"[progress.description]{label}",
        BarColumn(),
        MofNCompleteColumn(),
        f"{unit}",
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def on_progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield on_progress


def _lines(label: str, unit: str) -> ItemProgress:
    started = time.monotonic()
    last = started

    def on_progress(done: int, total: int | None) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < LINE_EVERY_SECONDS:
            return
        last = now
        of = f" of {total:,}" if total is not None else ""
        err_console.print(f"{label}: {done:,}{of} {unit}, {now - started:.0f} s", highlight=False)

    return on_progress
