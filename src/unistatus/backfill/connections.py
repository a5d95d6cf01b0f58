"""What ``backfill --workers N`` needs of the role's connection slots, said when the
server refuses one for a limit (a role's CONNECTION LIMIT, max_connections): rerunning
the same command meets the same limit, so the refusal says what a rerun needs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from unistatus.db.connection_limit import connection_limit_error, refused_for_a_limit
from unistatus.errors import ConnectionLimitError, StorageError

__all__ = ["connections_needed", "limit_named"]


def connections_needed(workers: int) -> int:
    """The connections a backfill of ``workers`` holds at once: one per worker (each
    copies its batches on a connection of its own) and one for the progress."""
    return workers + 1


@contextmanager
def limit_named(workers: int) -> Iterator[None]:
    """A failure of the block that is a connection refused for a limit as
    ConnectionLimitError saying what ``--workers`` needs; others as they are."""
    try:
        yield
    except StorageError as exc:
        if not refused_for_a_limit(exc) and not refused_for_a_limit(str(exc)):
            raise
        base = exc if isinstance(exc, ConnectionLimitError) else _as_limit(exc)
        need = connections_needed(workers)
        raise ConnectionLimitError(
            f"{base}; backfill --workers {workers} opens up to {need} connections (one "
            "per worker and one for the progress; docs/scaling.md): rerun with fewer "
            "--workers or a higher CONNECTION LIMIT for the role (every committed batch "
            "is kept)",
            need,
        ) from None


def _as_limit(exc: StorageError) -> ConnectionLimitError:
    cause = exc.__cause__ or exc.__context__
    return connection_limit_error("the backfill", cause if cause is not None else exc)
