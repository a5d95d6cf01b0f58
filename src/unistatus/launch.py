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
after the imports). This module imports nothing but the standard library, so that it
holds from the start: the CLI it starts loads typer, rich and the rest.
"""

from __future__ import annotations

import contextlib
import gc
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, NoReturn

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


# What Ctrl-C during the start-up leaves: nothing done yet (the message and exit code of
# an interrupted command, unistatus.cli.context.say_interrupted, whose module may be the
# one half imported).
INTERRUPTED_WHILE_STARTING = "it stopped while starting, before it did anything: run it again"
EXIT_INTERRUPTED = 130  # unistatus.cli.context.EXIT_INTERRUPTED (not imported: see above)


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


# What :func:`signal.signal` sets and returns.
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGHUP) in the block stops it as Ctrl-C does (KeyboardInterrupt), so
    its cleanup runs: by default SIGTERM ends Python at once, with no ``finally`` run (a
    load test would leave its write mode behind, a backfill its workers "running").
    Installed by :func:`main` before the CLI is imported (SIGTERM during the imports
    ended the process with 143 and not a word), and around the whole program by
    :func:`unistatus.cli.run_program`, for every command (the programs that do not start
    here). The main thread only (where signals arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGHUP too (the terminal of a command started by hand closed: a dropped SSH
    # session ended a backfill with its workers "running"), unless it is ignored
    # (`nohup`: the command is meant to outlive its terminal).
    hangup = getattr(signal, "SIGHUP", None)
    stops = [signal.SIGTERM]
    if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
        stops.append(hangup)
    before: dict[int, _Handler] = {signum: signal.signal(signum, interrupt) for signum in stops}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


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
