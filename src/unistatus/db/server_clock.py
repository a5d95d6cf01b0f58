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

from datetime import UTC, datetime

import sqlalchemy as sa

from unistatus.clock import as_utc

__all__ = ["as_database_reads", "database_now"]

_NOW = {
    "postgresql": "SELECT clock_timestamp()",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


def database_now(conn: sa.Connection) -> datetime:
    """The database server's time now (aware, UTC): one round trip."""
    value = conn.exec_driver_sql(_NOW[conn.dialect.name]).scalar_one()
    if isinstance(value, str):  # SQLite: text, UTC
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
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
