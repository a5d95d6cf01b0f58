"""A claim one process holds while it works: refused at once to another, lost with its
holder's death (a kill, a crash: nothing to clean up, nothing blocking for ever).

What ``check`` walks a run under (:mod:`unistatus.migration.check_claim`) and what a
load test holds the write mode under (:mod:`unistatus.sim.loadtest`); a shared claim is
held by several processes at once and refused only to an exclusive one (and the other
way round):

- PostgreSQL: a transaction-scoped advisory lock keyed by the claim's name, in a
  transaction held open on a connection of its own outside the caller's pool (the
  caller works in as few connections as it did before the claim); a process that dies
  loses it with its connection. Not a session lock: through a transaction pooler
  (PgBouncer) that stayed on whichever server connection took it, for whichever client
  got that connection next (a second holder let through, a claim after a kill
  refused); an open transaction keeps its server connection to itself, and ends with
  its client. It holds no snapshot and no transaction id (nothing for vacuum to wait
  for), the server's timeouts for open transactions are off for it, it is named as
  unistatus's tools are (``unistatus/<what> claim``: idle in transaction for the whole
  run, it is no live traffic to a backfill beside it), bounded from the client by the
  ``network`` settings as every engine of unistatus's, and if its connection ends under
  it the work goes on, the loss logged;
- SQLite: a ``flock`` on a file beside the database file (``<database>.<tag>-<hash of
  the name>.lock``, removed on release by the last holder; the lock is taken again if
  the file was removed and made anew meanwhile); a process that dies loses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import sqlalchemy as sa

from unistatus.config import NetworkSettings
from unistatus.db.engine import create_engine, session_name

__all__ = ["hold_claim", "hold_claims"]

log = logging.getLogger("unistatus.db.claims")


def _digest(name: str, size: int) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=size).digest()


@contextmanager
def hold_claim(
    engine: sa.Engine,
    name: str,
    busy: Callable[[], Exception],
    *,
    tag: str,
    shared: bool = False,
    network: NetworkSettings | None = None,
) -> Iterator[None]:
    """Hold claim ``name`` while the block runs; raise ``busy()`` at once if another
    process (or another claim of this one) holds it (exclusively, when ``shared``).
    ``tag`` names its session (``unistatus/<tag> claim``) and its SQLite lock file;
    ``network`` (the settings', None: the defaults) bounds its connection."""
    with hold_claims(engine, [name], lambda _: busy(), tag=tag, shared=shared, network=network):
        yield


@contextmanager
def hold_claims(
    engine: sa.Engine,
    names: Sequence[str],
    busy: Callable[[str], Exception],
    *,
    tag: str,
    shared: bool = False,
    network: NetworkSettings | None = None,
) -> Iterator[None]:
    """Hold every claim of ``names`` while the block runs, or none: ``busy(name)`` is
    raised at once for the first another process holds (PostgreSQL: all taken in one
    statement on one connection)."""
    if engine.dialect.name == "postgresql":
        with _advisory(engine, names, busy, tag, shared, network):
            yield
        return
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        yield  # a private database, or one named by URI: no lock file beside it
        return
    with ExitStack() as held:
        for name in names:
            lock_file = Path(f"{database}.{tag}-{_digest(name, 8).hex()}.lock")
            held.enter_context(_flock(lock_file, partial(busy, name), shared))
        yield


# The claim, sent as text (no bound values: a statement's parameters keep its portal,
# and with it a snapshot, open until the next statement, which comes at the claim's
# end); its transaction exempt from the server's timeouts for idle (and, from PostgreSQL
# 17, any) open transactions, which would end it and the claim with it.
_CLAIM = (
    "SELECT set_config('idle_in_transaction_session_timeout', '0', true), "
    "CASE WHEN current_setting('server_version_num')::int >= 170000 "
    "THEN set_config('transaction_timeout', '0', true) END, "
    "{locks}"
)


@contextmanager
def _advisory(
    engine: sa.Engine,
    names: Sequence[str],
    busy: Callable[[str], Exception],
    tag: str,
    shared: bool,
    network: NetworkSettings | None,
) -> Iterator[None]:
    keys = [int.from_bytes(_digest(name, 8), "big", signed=True) for name in names]
    function = "pg_try_advisory_xact_lock_shared" if shared else "pg_try_advisory_xact_lock"
    locks = ", ".join(f"{function}({int(key)})" for key in keys)
    # Made as every engine of unistatus's (named, bounded from the client by the
    # ``network`` settings: a claim held over a dead link would never end), with no
    # pool (the connection ends with the claim) and nothing asked of the server at
    # connect (its one statement is never prepared). READ COMMITTED whatever the
    # server's default: a REPEATABLE READ transaction keeps its first statement's
    # snapshot to its end, holding back vacuum for the whole run. Named as unistatus's
    # tools are: idle in transaction for the whole run, it is no live traffic to a
    # backfill's probe beside it, nor an anonymous session to a DBA.
    own = create_engine(
        engine.url.render_as_string(hide_password=False),
        application_name=session_name(f"{tag} claim"),
        network=network,
        prepared_statements=False,
        poolclass=sa.pool.NullPool,
        isolation_level="READ COMMITTED",
    )
    try:
        with own.connect() as conn:
            conn.begin()
            got = conn.exec_driver_sql(_CLAIM.format(locks=locks)).one()[2:]
            taken = [name for name, held in zip(names, got, strict=True) if not held]
            if taken:
                conn.rollback()  # the ones it got go with the transaction
                raise busy(taken[0])
            try:
                yield  # the transaction ends after the block: the locks go with it
            finally:
                _end(conn, ", ".join(names))
    finally:
        own.dispose()


def _end(conn: sa.Connection, name: str) -> None:
    """End the claim's transaction (nothing to commit). Its connection may have ended
    under it (a server restart, ``pg_terminate_backend``): the work's own outcome
    stands, the loss is said."""
    try:
        conn.rollback()
    except sa.exc.DBAPIError as exc:
        log.warning(
            "the claim %s was lost before its work ended (its connection: %s); "
            "another process could have taken it meanwhile",
            name,
            str(exc.orig).strip().splitlines()[0] if exc.orig else exc,
        )


@contextmanager
def _flock(path: Path, busy: Callable[[], Exception], shared: bool) -> Iterator[None]:
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy() from None
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
        # Removed by the last holder only (one that can hold it alone): a shared holder
        # still at work keeps the file others must lock.
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
        except BlockingIOError:
            pass
        os.close(fd)
