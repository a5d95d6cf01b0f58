"""The files a SQLite database is (the file, and the -wal, -shm and -journal SQLite
keeps beside it), so that no output of unistatus's is written over them: `check --out
u.db` truncated the database to 0 bytes (a probe)."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from unistatus.errors import InputError

__all__ = ["database_files", "refuse_database_file"]

_BESIDE = ("", "-wal", "-shm", "-journal")


def database_files(url: str | sa.URL | None) -> list[Path]:
    """The files of the SQLite database ``url`` names (none for another backend, an
    in-memory database, or a URL that does not parse)."""
    if url is None:
        return []
    try:
        parsed = url if isinstance(url, sa.URL) else sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return []
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return []
    name = str(parsed.database)
    if name.startswith("file:"):  # a URI filename (?uri=true): its path part
        name = name.removeprefix("file:").split("?", 1)[0]
    return [Path(f"{name}{suffix}") for suffix in _BESIDE]


def refuse_database_file(path: str | os.PathLike[str], url: str | sa.URL | None) -> None:
    """InputError when ``path`` (followed through links) is one of the database's own
    files (:func:`database_files`): writing it would destroy the database."""
    wanted = os.path.realpath(path)
    for own in database_files(url):
        if wanted == os.path.realpath(own) or _same(wanted, own):
            raise InputError(
                f"--out {path}: that is the database's own file ({own}); writing it would "
                "destroy the database: name another file"
            )


def _same(path: str, other: Path) -> bool:
    try:
        return os.path.samefile(path, other)  # a hard link, another name of it
    except OSError:  # one of them does not exist (yet)
        return False
