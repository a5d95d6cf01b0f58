"""A command's output file written whole or not at all (``diagnose --out``, ``export
... --out``): on a full disk the half-written file took the place of the good one
before it (found by a probe), and a half-written rules file is what a Prometheus
reload would then read."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path


def write_whole(path: Path, text: str) -> None:
    """``text`` into ``path``: written beside it under a temporary name, flushed to disk,
    then renamed over it, so that a reader sees the file before or after, never half
    of it; on a failure the temporary file goes and ``path`` is left as it was (OSError
    raised). A symbolic link's target is the file written (the link stays); a file
    there keeps its mode. What is no regular file (``/dev/stdout``, a FIFO) is written
    as it is."""
    try:
        found = path.stat()  # through a link: what is written
    except FileNotFoundError:
        found = None
    # A stream's name (/dev/stdout, /dev/fd/N, a FIFO): written as it is, in place; its
    # link's target is no file to replace (a redirected one would lose what it held).
    stream = str(path).startswith(("/dev/", "/proc/"))
    if stream or (found is not None and not stat.S_ISREG(found.st_mode)):
        with path.open("a", encoding="utf-8") as out:  # a redirected file is not cut
            out.write(text)
        return
    target = Path(os.path.realpath(path))
    # A name of its own each run (a container's process is pid 1 every time), short
    # enough beside a long one; made as a new file is (the umask applies), or with the
    # mode of the file it replaces.
    temporary = target.with_name(f".{target.name[:64]}.{secrets.token_hex(6)}.partial")
    mode = stat.S_IMODE(found.st_mode) if found is not None else 0o666
    try:
        with open(temporary, "x", encoding="utf-8", opener=_opener(mode)) as file:
            file.write(text)
            file.flush()
            if found is not None:
                os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _opener(mode: int) -> Callable[[str, int], int]:
    return lambda name, flags: os.open(name, flags, mode)
