"""Where an archive export writes: a directory of its own, whose finished archive is put
in ``--out`` once its manifest is written.

An export killed where it cannot clean up (SIGKILL: the OOM killer, a CI job's
timeout) wrote its table files into ``--out`` itself, without a manifest, and its retry
was refused as "not empty". Now ``--out`` holds a whole archive or what a killed export
left in a directory of its own, which nothing reads and which is safe to delete:

- ``--out`` missing: the export writes in ``.<name>.unfinished-<pid>-<hex>`` beside it,
  renamed to ``--out`` whole at the end (one file system: same parent).
- ``--out`` an empty directory made beforehand: the export writes in
  ``--out/.unfinished-<pid>-<hex>``, and its files are renamed up into ``--out`` one by
  one, the manifest last, then that directory goes. ``--out`` may be a mount point (a
  PVC, NFS: a rename onto it fails, EBUSY or EXDEV, and the export would have been
  written on the parent's file system), its parent may not be writable, and its owner,
  mode and ACLs are someone's choice: it is written in, never replaced, and nothing is
  made beside it.

Either way the archive is complete when its manifest appears.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from pathlib import Path

from unistatus.errors import InputError
from unistatus.migration.archive_format import MANIFEST
from unistatus.migration.private_files import DIRECTORY_MODE

__all__ = ["discard", "put_in_place", "refuse_used", "workspace"]

# What an unfinished export of an older version left in --out itself.
_EXPORT_SUFFIX = ".jsonl.gz"
# The directory an export into an existing --out writes in, inside it.
_INSIDE = ".unfinished-"


def refuse_used(directory: Path) -> None:
    """InputError unless ``directory`` is missing or an empty directory; one that holds
    an unfinished export only (its directory of its own, the table files an export
    left in it) is named as such, and as safe to delete."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory")
    if not directory.exists():
        return
    names = sorted(p.name for p in directory.iterdir())
    if not names:
        return
    own = [n for n in names if n.startswith(_INSIDE) and (directory / n).is_dir()]
    unfinished = MANIFEST not in names and all(
        n.endswith(_EXPORT_SUFFIX) or n == MANIFEST + ".tmp" or n in own for n in names
    )
    if unfinished:
        # Written inside an existing --out: what it holds goes, --out itself stays.
        delete = " ".join(str(directory / n) for n in names) if own else str(directory)
        raise InputError(
            f"{directory} holds an unfinished export's files ({', '.join(names)}) but no "
            "manifest.json: an unfinished export (stopped before its end), not an "
            f"archive; it is safe to delete (rm -r {delete}), then export again"
        )
    raise InputError(f"{directory} is not empty: export into a new directory")


def workspace(directory: Path) -> Path:
    """A new, empty directory for the export to write in: inside ``directory`` if it
    exists (empty: :func:`refuse_used`), else beside it (its parent made if missing);
    InputError if it cannot be made."""
    target = directory.absolute()
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    try:
        if target.is_dir():
            work = target / f"{_INSIDE}{token}"
        else:
            work = target.parent / f".{target.name}.unfinished-{token}"
            target.parent.mkdir(parents=True, exist_ok=True)
        work.mkdir(mode=DIRECTORY_MODE)
    except OSError as exc:
        raise InputError(
            f"cannot create the archive directory {directory}: {exc.strerror or exc}"
        ) from None
    return work


def put_in_place(work: Path, directory: Path) -> None:
    """The finished archive in ``work`` becomes ``directory``'s content: ``work``
    renamed to it, or (made inside it) its files renamed up, the manifest last. OSError
    if ``directory`` no longer is missing or empty (``work`` aside), as it was."""
    target = directory.absolute()
    if work.parent != target:
        os.replace(work, target)  # only onto a missing or empty directory (POSIX)
        return
    others = [p.name for p in target.iterdir() if p.name != work.name]
    if others:
        raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), str(target))
    names = sorted(p.name for p in work.iterdir() if p.name != MANIFEST) + [MANIFEST]
    moved: list[str] = []
    try:
        for name in names:
            os.rename(work / name, target / name)
            moved.append(name)
    except OSError:
        for name in moved:  # back where discard() finds them
            os.rename(target / name, work / name)
        raise
    work.rmdir()


def discard(work: Path) -> None:
    """After a failed or interrupted export: what it wrote, gone."""
    shutil.rmtree(work, ignore_errors=True)
