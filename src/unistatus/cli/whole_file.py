"""A command's output file written whole or not at all (``diagnose --out``, ``export
... --out``): on a full disk the half-written file took the place of the good one
before it (found by a probe), and a half-written rules file is what a Prometheus
reload would then read."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


def write_whole(path: Path, text: str) -> None:
    """``text`` into ``path``: written beside it under a temporary name, flushed to disk,
    then renamed over it, so that a reader sees the file before or after, never half
    of it; on a failure the temporary file goes and ``path`` is left as it was (OSError
    raised). What is no regular file (``/dev/stdout``, a FIFO) is written as it is."""
    try:
        special = not stat.S_ISREG(path.stat().st_mode)
    except FileNotFoundError:
        special = False
    if special:
        path.write_text(text, encoding="utf-8")
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with temporary.open("x", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
