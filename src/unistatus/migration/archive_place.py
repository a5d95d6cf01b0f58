"""Where an archive export writes: a directory of its own beside ``--out``, renamed into
place whole once its manifest is written.

An export killed where it cannot clean up (SIGKILL: the OOM killer, a CI job's
timeout) wrote its table files into ``--out`` itself, without a manifest, and its retry
was refused as "not empty". Now ``--out`` holds a whole archive or is as it was; what
a killed export leaves is its ``.<name>.unfinished-<pid>-<hex>`` directory beside it,
which nothing reads and which is safe to delete. The rename stays on one file system
(same parent), and replaces ``--out`` only while it is an empty directory (POSIX
``rename``), so an archive cannot land on files someone put there meanwhile.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from unistatus.errors import InputError
from unistatus.migration.archive_format import MANIFEST

__all__ = ["discard", "put_in_place", "refuse_used", "workspace"]

# What an unfinished export of an older version left in --out itself.
_EXPORT_SUFFIX = ".jsonl.gz"


def refuse_used(directory: Path) -> None:
    """InputError unless ``directory`` is missing or an empty directory; one that holds
    an unfinished export's table files only is named as such, and as safe to delete."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory")
    if not directory.exists():
        return
    names = [p.name for p in directory.iterdir()]
    if not names:
        return
    unfinished = MANIFEST not in names and all(
        n.endswith(_EXPORT_SUFFIX) or n == MANIFEST + ".tmp" for n in names
    )
    if unfinished:
        raise InputError(
            f"{directory} holds table files but no manifest.json: an unfinished export "
            "(stopped before its end), not an archive; it is safe to delete "
            f"(rm -r {directory}), then export again"
        )
    raise InputError(f"{directory} is not empty: export into a new directory")


def workspace(directory: Path) -> Path:
    """A new, empty directory beside ``directory`` (its parent made if missing) for the
    export to write in; InputError if it cannot be made."""
    target = directory.absolute()
    work = target.parent / f".{target.name}.unfinished-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work.mkdir()
    except OSError as exc:
        raise InputError(
            f"cannot create the archive directory {directory}: {exc.strerror or exc}"
        ) from None
    return work


def put_in_place(work: Path, directory: Path) -> None:
    """The finished archive in ``work`` becomes ``directory`` (OSError if ``directory``
    is no longer missing or empty)."""
    os.replace(work, directory.absolute())


def discard(work: Path) -> None:
    """After a failed or interrupted export: what it wrote, gone."""
    shutil.rmtree(work, ignore_errors=True)
