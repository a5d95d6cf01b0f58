"""The database server's clock (the one clock every host of a migration shares) and
its time zone.

What unistatus stamps on one host and compares on another (a check report's start
against the control log's last mode change, continuous verification's watermark
against the ``updated_at`` of rows changed since) must come from one clock, else a host
whose clock runs ahead makes an old check look newer than a switch, or moves the
watermark past rows it never verified. The host's clock (:mod:`unistatus.clock`) stays
right for durations and for what one process does on its own.

PostgreSQL: ``clock_timestamp()`` (the time now, not the transaction's start). SQLite
is embedded: its clock is the host's operating system clock (never a process's patched
one), read to the millisecond as SQLite's own date functions keep it.

A legacy ``timestamp without time zone`` holds no zone: PostgreSQL reads it in the
session's TimeZone wherever it compares it with a ``timestamptz`` (the check's SQL
does), and :func:`as_database_reads` reads it so too (SQLite keeps no zone: UTC).
"""

from __future__ import annotations

import logging
import weakref
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow

__all__ = [
    "SKEW_WARNED",
    "DatabaseClock",
    "as_database_reads",
    "clock_of",
    "database_lead",
    "database_now",
    "warn_of_skew",
]

log = logging.getLogger("unistatus.db")

# How far this host's clock may be from the database's before it is said: what a process
# stamps is moved onto the database's clock by the lead it measured, but a clock that
# far off may step (NTP catching up) between two measures.
SKEW_WARNED = timedelta(seconds=10)

# PostgreSQL's as seconds since the epoch: a number, whatever the session's DateStyle
# (an application's engine in 'German, DMY' cannot read a timestamptz back: a probe).
_NOW = {
    "postgresql": "SELECT extract(epoch FROM clock_timestamp())",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


def database_now(conn: sa.Connection) -> datetime:
    """The database server's time now (aware, UTC): one round trip."""
    value = conn.exec_driver_sql(_NOW[conn.dialect.name]).scalar_one()
    if isinstance(value, str):  # SQLite: text, UTC
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if isinstance(value, int | float | Decimal):  # PostgreSQL: seconds since the epoch
        return datetime.fromtimestamp(float(value), UTC)
    now = as_utc(value)
    assert now is not None
    return now


def as_database_reads(conn: sa.Connection, value: datetime | None) -> datetime | None:
    """``value`` (a time read from the database, e.g. a legacy ``updated_at``) in UTC,
    a naive one as PostgreSQL reads it: in the session's TimeZone (one round trip)."""
    if value is not None and value.tzinfo is None and conn.dialect.name == "postgresql":
        stamp = sa.bindparam("naive", value, sa.DateTime(timezone=False))
        value = conn.execute(sa.select(sa.cast(stamp, sa.DateTime(timezone=True)))).scalar_one()
    return as_utc(value)


def database_lead(conn: sa.Connection) -> timedelta:
    """How far the database server's clock is ahead of this host's (negative: behind),
    measured around one read of it (not the wait for the connection)."""
    asked = utcnow()
    server = database_now(conn)
    return server - (asked + (utcnow() - asked) / 2)


class DatabaseClock:
    """The database server's time without a round trip: this host's clock moved by its
    lead as last measured (:meth:`measure`, around one read). What a process stamps on
    rows that other hosts compare (a change's ``updated_at``, read by ``repair
    --strategy newest_wins`` against another writer's, and by the staleness of unified
    after a legacy-only stretch) is on it: a host minutes off stamped a change minutes
    off. No lead until measured, and none on SQLite (its clock is this host's)."""

    def __init__(self) -> None:
        self.lead = timedelta(0)

    def now(self) -> datetime:
        return utcnow() + self.lead

    def measure(self, conn: sa.Connection) -> timedelta:
        """Measure this host's lead now (one round trip) and return it; kept (what
        :meth:`now` adds) on PostgreSQL only, and only from :data:`LEAD_APPLIED` on: a
        measure is off by up to half its round trip, and a host in step (NTP) keeps its
        own clock, whose stamps never step back between two measures. SQLite's clock
        is this host's."""
        lead = database_lead(conn)
        if conn.dialect.name == "postgresql":
            self.lead = lead if abs(lead) >= LEAD_APPLIED else timedelta(0)
        return lead


# The least lead a clock corrects: below it a host is in step with the database (a
# measure's own error is half its round trip, milliseconds; the staleness of unified
# after a legacy-only stretch allows 2 s: control.STALE_SLACK).
LEAD_APPLIED = timedelta(seconds=1)

_CLOCKS: weakref.WeakKeyDictionary[sa.Engine, DatabaseClock] = weakref.WeakKeyDictionary()


def clock_of(engine: sa.Engine) -> DatabaseClock:
    """The one :class:`DatabaseClock` of ``engine`` in this process: measured by whoever
    reads the lead (an adapter's start, its statistics' flush, a repair, a replay), read
    by everything that stamps."""
    clock = _CLOCKS.get(engine)
    if clock is None:
        clock = _CLOCKS.setdefault(engine, DatabaseClock())
    return clock


def warn_of_skew(engine: sa.Engine, who: str) -> timedelta | None:
    """A warning when this host's clock is more than :data:`SKEW_WARNED` from the
    database server's (PostgreSQL; SQLite's clock is this host's); the skew found (None:
    not read). A host behind stamps its changes in the past: past the 60 s of slack,
    continuous verification never reads them (a probe: 200 transactions of an adapter
    ten minutes behind, never verified); only a full check does. The lead measured is
    ``engine``'s :func:`clock_of` from now on: what the process stamps is on the
    database's clock whatever its host's says."""
    if engine.dialect.name != "postgresql":
        return None
    try:
        with engine.connect() as conn:
            skew = -clock_of(engine).measure(conn)
    except sa.exc.DBAPIError:
        return None  # what cannot be read here is said where it matters
    if abs(skew) > SKEW_WARNED:
        side = "behind" if skew < timedelta(0) else "ahead of"
        log.warning(
            "%s: this host's clock is %.1f s %s the database server's: the times it stamps "
            "(a row's updated_at, its statistics) are moved by that much onto the "
            "database's clock, as measured now and at each statistics flush (a step of "
            "the host's clock in between stamps off by the step); keep the hosts' clocks "
            "in step (NTP)",
            who,
            abs(skew.total_seconds()),
            side,
        )
    return skew
