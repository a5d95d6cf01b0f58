"""Adapters across ``os.fork()``: what a child process must not inherit as it is.

An application may build its adapter before forking its workers (gunicorn ``--preload``,
multiprocessing's fork). The child inherits the parent's pooled connections, which the
parent still uses (two processes on one PostgreSQL connection interleave their protocol:
commits reported as failures), and every lock and write slot held at that moment by a
thread that does not exist in the child (held for ever there). Each live adapter is told
after a fork, in the child; the statistics have a hook of their own
(:mod:`unistatus.adapter.stats`).
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

import sqlalchemy as sa

__all__ = ["ForkAware", "fresh_pool", "survive_forks"]


class ForkAware(Protocol):
    def after_fork_in_child(self) -> None: ...


_live: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def survive_forks(owner: ForkAware) -> None:
    """Call ``owner.after_fork_in_child()`` in every child forked while it lives."""
    _live.add(owner)


# Each engine's pool, replaced once per process (the statistics' hook and the adapters'
# both ask: a second dispose would strand what the first's users checked out).
_fresh_in: weakref.WeakKeyDictionary[sa.Engine, int] = weakref.WeakKeyDictionary()


def fresh_pool(engine: sa.Engine) -> None:
    """In a forked child: ``engine``'s pool replaced without closing the parent's
    connections (SQLAlchemy's fork recipe, ``dispose(close=False)``), once."""
    if _fresh_in.get(engine) == os.getpid():
        return
    _fresh_in[engine] = os.getpid()
    engine.dispose(close=False)


def _after_fork_in_child() -> None:
    for owner in list(_live):
        owner.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
