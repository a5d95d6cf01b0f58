"""What stops a program of unistatus's: SIGTERM (and SIGHUP) as Ctrl-C, and what an
interruption before a command's own handling of one says.

Standard library only, below every layer: :mod:`unistatus.launch` (the entry point)
installs it before anything else is imported, and :mod:`unistatus.cli` around every
command.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["EXIT_INTERRUPTED", "INTERRUPTED_WHILE_STARTING", "terminate_as_interrupt"]

# What Ctrl-C during the start-up leaves: nothing done yet (the message and exit code of
# an interrupted command, unistatus.cli.context.say_interrupted, whose module may be the
# one half imported).
INTERRUPTED_WHILE_STARTING = "it stopped while starting, before it did anything: run it again"
EXIT_INTERRUPTED = 130  # unistatus.cli.context.EXIT_INTERRUPTED (not imported: see above)


# What :func:`signal.signal` sets and returns.
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGHUP) in the block stops it as Ctrl-C does (KeyboardInterrupt), so
    its cleanup runs: by default SIGTERM ends Python at once, with no ``finally`` run (a
    load test would leave its write mode behind, a backfill its workers "running").
    Installed by :func:`unistatus.launch.main` before the CLI is imported (SIGTERM during the imports
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
