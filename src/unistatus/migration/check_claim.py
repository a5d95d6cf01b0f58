"""One process at a time walks a check run: the claim on a run's name.

Two processes walking the same run (two ``check --resume`` at once, or a resume of a
run that is still going) would each count the ranges after the stored position and
each write their mismatches to the run's ``--out`` file: counted twice, lines doubled.
The claim is taken before the run is first stored, held until its report is stored,
and refused to a second process at once:

- PostgreSQL: a transaction-scoped advisory lock keyed by the run's name, in a
  transaction held open on a connection of its own outside the caller's pool (a check
  walks in as few connections as it did before the claim); a process that dies loses
  it with its connection. Not a session lock: through a transaction pooler (PgBouncer)
  that stayed on whichever server connection took it, for whichever client got that
  connection next (a second walker let through, a resume after a kill refused); an open
  transaction keeps its server connection to itself, and ends with its client. It
  holds no snapshot and no transaction id (nothing for vacuum to wait for), the
  server's timeouts for open transactions are off for it, it is named as unistatus's
  tools are (``unistatus/check claim``: idle in transaction for the whole run, it is no
  live traffic to a backfill beside it), and if its connection ends under it the run
  goes on, the loss logged;
- SQLite: an exclusive ``flock`` on a file beside the database file
  (``<database>.check-<hash of the run>.lock``, removed on release; the lock is taken
  again if the file was removed and made anew meanwhile); a process that dies loses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from unistatus.db.engine import session_name
from unistatus.errors import InputError

__all__ = ["claim_run"]

log = logging.getLogger("unistatus.migration.check")

# The claim's session, in pg_stat_activity.
CLAIM_NAME = session_name("check claim")


def _busy(name: str) -> InputError:
    return InputError(
        f"check run {name} is being walked by another process right now (a check, or a "
        "check --resume of it): wait for it to end, or resume the run once it has stopped"
    )


def _digest(name: str, size: int) -> bytes:
    return hashlib.blake2b(f"unistatus.check:{name}".encode(), digest_size=size).digest()


@contextmanager
def claim_run(engine: sa.Engine, name: str) -> Iterator[None]:
    """Hold run ``name`` while the block walks it; InputError if another process does."""
    if engine.dialect.name == "postgresql":
        with _advisory(engine, name):
            yield
        return
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        yield  # a private database, or one named by URI: no lock file beside it
        return
    lock_file = Path(f"{database}.check-{_digest(name, 8).hex()}.lock")
    with _flock(lock_file, name):
        yield


# The claim, sent as text (no bound values: a statement's parameters keep its portal,
# and with it a snapshot, open until the next statement, which comes at the run's end);
# its transaction exempt from the server's timeouts for idle (and, from PostgreSQL 17,
# any) open transactions, which would end it and the claim with it.
_CLAIM = (
    "SELECT set_config('idle_in_transaction_session_timeout', '0', true), "
    "CASE WHEN current_setting('server_version_num')::int >= 170000 "
    "THEN set_config('transaction_timeout', '0', true) END, "
    "pg_try_advisory_xact_lock({key})"
)


@contextmanager
def _advisory(engine: sa.Engine, name: str) -> Iterator[None]:
    key = int.from_bytes(_digest(name, 8), "big", signed=True)
    # READ COMMITTED whatever the server's default: a REPEATABLE READ transaction keeps
    # its first statement's snapshot to its end, holding back vacuum for the whole run.
    # Named as unistatus's tools are: idle in transaction for the whole run, it is no
    # live traffic to a backfill's probe beside it, nor an anonymous session to a DBA.
    named = {} if "application_name" in engine.url.query else {"application_name": CLAIM_NAME}
    own = sa.create_engine(
        engine.url,
        poolclass=sa.pool.NullPool,
        isolation_level="READ COMMITTED",
        connect_args=named,
    )
    try:
        with own.connect() as conn:
            conn.begin()
            got = conn.exec_driver_sql(_CLAIM.format(key=int(key))).one()[-1]
            if not got:
                conn.rollback()
                raise _busy(name)
            try:
                yield  # the transaction ends after the block: the lock goes with it
            finally:
                _end(conn, name)
    finally:
        own.dispose()


def _end(conn: sa.Connection, name: str) -> None:
    """End the claim's transaction (nothing to commit). Its connection may have ended
    under it (a server restart, ``pg_terminate_backend``): the run's own outcome
    stands, the loss is said."""
    try:
        conn.rollback()
    except sa.exc.DBAPIError as exc:
        log.warning(
            "the claim on check run %s was lost before the run ended (its connection: %s); "
            "another process could have walked it meanwhile",
            name,
            str(exc.orig).strip().splitlines()[0] if exc.orig else exc,
        )


@contextmanager
def _flock(path: Path, name: str) -> Iterator[None]:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(name) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was released and removed while it was opened: again
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
