"""One process at a time walks a check run: the claim on a run's name.

Two processes walking the same run (two ``check --resume`` at once, or a resume of a
run that is still going) would each count the ranges after the stored position and
each write their mismatches to the run's ``--out`` file: counted twice, lines doubled.
The claim is taken before the run is first stored, held until its report is stored,
and refused to a second process at once (:func:`unistatus.db.claims.hold_claim`):

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

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from unistatus.config import NetworkSettings
from unistatus.db.claims import hold_claim
from unistatus.errors import InputError

__all__ = ["claim_run"]


def _busy(name: str) -> InputError:
    return InputError(
        f"check run {name} is being walked by another process right now (a check, or a "
        "check --resume of it): wait for it to end, or resume the run once it has stopped"
    )


@contextmanager
def claim_run(
    engine: sa.Engine, name: str, network: NetworkSettings | None = None
) -> Iterator[None]:
    """Hold run ``name`` while the block walks it; InputError if another process does.
    ``network``: the settings' bounds of the claim's connection (None: the defaults)."""
    with hold_claim(
        engine, f"unistatus.check:{name}", lambda: _busy(name), tag="check", network=network
    ):
        yield
