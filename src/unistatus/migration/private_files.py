"""Files holding payment data readable by their owner only, whatever the umask: an
archive's tables (each row's user, amount, currency, status), a check's mismatches
(both sides' values). Under the usual umask 022 they were world-readable (a probe)."""

from __future__ import annotations

import os

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def private(path: str | os.PathLike[str], flags: int) -> int:
    """An ``opener`` for :func:`open`: a file it creates has mode 0600."""
    return os.open(path, flags, FILE_MODE)
