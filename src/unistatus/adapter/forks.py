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

__all__ = ["ForkAware", "survive_forks"]


class ForkAware(Protocol):
    def after_fork_in_child(self) -> None: ...


_live: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def survive_forks(owner: ForkAware) -> None:
    """Call ``owner.after_fork_in_child()`` in every child forked while it lives."""
    _live.add(owner)


def _after_fork_in_child() -> None:
    for owner in list(_live):
        owner.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
