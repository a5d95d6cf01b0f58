"""The writers seen bypassing the adapter, as the observers show them.

Read from the capture's writer counts (:func:`unistatus.migration.capture_writers.writers_seen`).
Writer names carry the writer's ``application_name``, which the writer chooses: nothing
bounds how many there are. So what is shown is capped:

- ``/metrics``: :data:`MAX_WRITER_SERIES` writers keep a series of their own, the ones
  seen *first* (a writer seen later never takes a place: every series, ``other``
  included, only grows, as a Prometheus counter must); the rest are summed per system
  under ``writer="other"``.
- the snapshot (dashboards, ``/api/v1/status``): the :data:`MAX_WRITERS_SHOWN` most
  recently seen, and how many there are in all.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.db.server_clock import database_now
from unistatus.migration.capture import WriterSeen, is_enabled, writers_seen

__all__ = [
    "MAX_WRITERS_SHOWN",
    "MAX_WRITER_SERIES",
    "OTHER_WRITERS",
    "BypassWriters",
    "read_bypass_writers",
    "writer_series",
]

MAX_WRITER_SERIES = 20
MAX_WRITERS_SHOWN = 50
OTHER_WRITERS = "other"


class BypassWriters:
    """The capture's state as observers see it: on or off, and the writers seen;
    ``read_at``: the database's time of the read, the clock the writers' times are
    stamped on (a window over them is judged on it, whatever the observer's host
    clock says)."""

    def __init__(
        self, enabled: bool, writers: list[WriterSeen], read_at: datetime | None = None
    ) -> None:
        self.enabled = enabled
        self.writers = writers  # every one, the most recent first
        self.read_at = read_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "writers_total": len(self.writers),
            "writers": [w.as_dict() for w in self.writers[:MAX_WRITERS_SHOWN]],
        }


def read_bypass_writers(engine: sa.Engine) -> BypassWriters:
    """Whether capture is enabled, and every writer seen bypassing unistatus."""
    with engine.connect() as conn:
        return BypassWriters(is_enabled(conn), writers_seen(conn), database_now(conn))


def writer_series(writers: Iterable[WriterSeen]) -> list[tuple[str, str, int]]:
    """``(system, writer, writes)`` for ``unistatus_bypass_writes_total``: the first
    :data:`MAX_WRITER_SERIES` writers seen by name, the rest per system as ``other``."""
    ordered = sorted(
        writers,
        key=lambda w: (w.first_seen_at is None, w.first_seen_at, w.writer, w.system),
    )
    out = [(w.system, w.writer, w.writes) for w in ordered[:MAX_WRITER_SERIES]]
    other: dict[str, int] = {}
    for w in ordered[MAX_WRITER_SERIES:]:
        other[w.system] = other.get(w.system, 0) + w.writes
    out += [(system, OTHER_WRITERS, n) for system, n in sorted(other.items())]
    return out
