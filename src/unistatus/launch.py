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

import contextlib
import gc
import json
import sys
import threading
from typing import NoReturn

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


# What Ctrl-C during the imports leaves: nothing done yet (the message and exit code of
# an interrupted command, unistatus.cli.context.say_interrupted, whose module may be the
# one half imported).
INTERRUPTED_WHILE_STARTING = "it stopped while starting, before it did anything: run it again"
EXIT_INTERRUPTED = 130  # unistatus.cli.context.EXIT_INTERRUPTED (not imported: see above)


def main() -> None:
    collect_after_startup()
    try:
        from unistatus.cli import main as run_cli
    except KeyboardInterrupt:
        _interrupted_while_starting()
    run_cli()


def _interrupted_while_starting() -> NoReturn:
    sys.stderr.write(f"interrupted: {INTERRUPTED_WHILE_STARTING}\n")
    if "--json" in sys.argv[1:]:
        said = {
            "interrupted": True,
            "detail": INTERRUPTED_WHILE_STARTING,
            "exit_code": EXIT_INTERRUPTED,
        }
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.write(json.dumps(said, indent=2) + "\n")
            sys.stdout.flush()
    raise SystemExit(EXIT_INTERRUPTED)
