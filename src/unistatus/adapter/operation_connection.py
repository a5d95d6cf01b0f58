"""The connection an operation writes on, while it writes (the adapter's own
transaction, or the caller's).

A read the write needs on its way (the legacy tables reflected again when a status is
refused: :mod:`unistatus.adapter.storable`) is made on it, never on a second connection
of the pool: a caller holding its pool's only connection, or as many threads as the pool
has connections each holding one, waited out the pool's timeout, and the refusal came
out as a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import sqlalchemy as sa

__all__ = ["held_connection", "holding"]

_HELD: ContextVar[sa.Connection | None] = ContextVar("unistatus_operation_connection", default=None)


@contextmanager
def holding(conn: sa.Connection) -> Iterator[sa.Connection]:
    """``conn`` is the operation's connection while the block runs."""
    token = _HELD.set(conn)
    try:
        yield conn
    finally:
        _HELD.reset(token)


def held_connection() -> sa.Connection | None:
    """The connection of the operation running now (None: none holds one)."""
    return _HELD.get()
