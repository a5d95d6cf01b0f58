"""Timezone-aware UTC time in one place (tests may freeze it).

The host's clock: right for durations and for what this process does on its own.
Times that hosts stamp and later compare with each other (check reports, the control
log, continuous verification's watermark) come from the database server's clock
instead (:mod:`unistatus.db.server_clock`): a host whose clock is skewed cannot make an
old check look new.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` in UTC. An aware time is converted (psycopg hands back a ``timestamptz``
    in the session's TimeZone, and what is shown is labelled UTC); a naive one is taken
    as the UTC it was written as (SQLite keeps no zone)."""
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
