"""The ``unistatus`` program's entry point: its start-up without the cyclic collector.

A command spends most of its start-up importing (SQLAlchemy, psycopg, pydantic, typer
and rich: 0.4-0.6 s on the 2-core test machine), and everything those imports create
lives until the process ends; the cyclic collector walks it again and again while it is
made, for nothing (the imports of ``unistatus check`` took 0.86x as long with it off:
median of 20 alternating runs). It is off for the first :data:`STARTUP_SECONDS` of the
process and on again after that, by a daemon timer: no command waits for it, and a
command that runs for hours (``serve``, ``monitor``, ``backfill``) collects as always.
What the start-up made is frozen first (``gc.freeze``): modules, classes and functions
that live as long as the process, which the collector would otherwise walk all at once
in its first collection, and again in every full one.
"""

from __future__ import annotations

import gc
import threading

STARTUP_SECONDS = 1.0


def collect_after_startup(seconds: float | None = None) -> threading.Timer:
    """Turn the cyclic collector off now and on again after ``seconds`` (None:
    :data:`STARTUP_SECONDS`)."""
    seconds = STARTUP_SECONDS if seconds is None else seconds
    gc.disable()
    timer = threading.Timer(seconds, _collect_from_now)
    timer.daemon = True
    timer.name = "unistatus-startup-gc"
    timer.start()
    return timer


def _collect_from_now() -> None:
    gc.freeze()
    gc.enable()


def main() -> None:
    collect_after_startup()
    from unistatus.cli import main as run_cli

    run_cli()
