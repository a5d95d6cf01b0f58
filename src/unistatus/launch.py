"""The ``unistatus`` program's entry point: its start-up without the cyclic collector,
stopped by SIGTERM as by Ctrl-C from its first line, and an interruption in it said.

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

An interruption (Ctrl-C, SIGTERM, SIGHUP) before the command's own handling of one is
in place (the imports, Typer building the command tree, the command line parsed: a
few tenths of a second) is said as such: one line, exit 130, under ``--json`` one JSON
object (:func:`main`; :func:`unistatus.cli.errors_shown.says_interrupted_while_starting`
after the imports). This module imports nothing but the standard library and
:mod:`unistatus.interrupts` (standard library only), so that it holds from the start:
the CLI it starts loads typer, rich and the rest.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import threading
from typing import NoReturn

from unistatus.interrupts import (
    EXIT_INTERRUPTED,
    INTERRUPTED_WHILE_STARTING,
    terminate_as_interrupt,
)

__all__ = [
    "EXIT_INTERRUPTED",
    "INTERRUPTED_WHILE_STARTING",
    "STARTUP_SECONDS",
    "collect_after_startup",
    "main",
    "terminate_as_interrupt",
]

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
    """Run the command line. Everything that reaches here as KeyboardInterrupt is one of
    the start-up: :func:`unistatus.cli.run_program` ends every later one itself."""
    collect_after_startup()
    with terminate_as_interrupt():
        try:
            from unistatus.cli import main as run_cli

            run_cli()
        except KeyboardInterrupt:
            _interrupted_while_starting()


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
