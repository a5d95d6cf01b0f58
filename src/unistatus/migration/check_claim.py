"""One process at a time walks a check run: the claim on a run's name.

Two processes walking the same run (two ``check --resume`` at once, or a resume of a
run that is still going) would each count the ranges after the stored position and
each write their mismatches to the run's ``--out`` file: counted twice, lines doubled.
The claim is held for the whole walk and refused to a second process at once:

- PostgreSQL: a session advisory lock on a connection of its own, keyed by the run's
  name (released with ``pg_advisory_unlock`` before the connection goes back to the
  pool; a process that dies loses it with its connection);
- SQLite: an exclusive ``flock`` on a file beside the database file
  (``<database>.check-<run>.lock``, removed on release; a process that dies loses it).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from unistatus.errors import InputError

__all__ = ["claim_run"]


def _busy(name: str) -> InputError:
    return InputError(
        f"check run {name} is being walked by another process right now (a check, or a "
        "check --resume of it): wait for it to end, or resume the run once it has stopped"
    )


def _key(name: str) -> int:
    digest = hashlib.blake2b(f"unistatus.check:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def claim_run(engine: sa.Engine, name: str) -> Iterator[None]:
    """Hold run ``name`` while the block walks it; InputError if another process does."""
    if engine.dialect.name == "postgresql":
        with _advisory(engine, name):
            yield
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield  # a private database: no other process sees it
        return
    with _flock(Path(f"{database}.check-{name}.lock"), name):
        yield


@contextmanager
def _advisory(engine: sa.Engine, name: str) -> Iterator[None]:
    key = _key(name)
    with engine.connect() as conn:
        got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one()
        conn.commit()
        if not got:
            raise _busy(name)
        try:
            yield
        finally:
            try:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                conn.commit()
            except sa.exc.DBAPIError:
                pass  # the connection is gone, and its lock with it


@contextmanager
def _flock(path: Path, name: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(name) from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)
