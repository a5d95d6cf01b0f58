"""A host whose clock is wrong: every module of unistatus that reads the host's clock
(``unistatus.clock.utcnow``) reads it ``ahead`` of the real time, as
under ``faketime`` (which the tests do not use: it would skew the database's clock on
SQLite too, and the test runner's own)."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

import pytest

from unistatus import clock


def host_clock_ahead(monkeypatch: pytest.MonkeyPatch, ahead: timedelta) -> None:
    """Until the test's monkeypatch is undone, unistatus's host clock runs ``ahead``:
    the clock module's ``datetime``, which :func:`unistatus.clock.utcnow` reads, so
    every caller is skewed, a ``default_factory=utcnow`` bound at import included."""

    class SkewedDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:
            return datetime.now(tz) + ahead

    monkeypatch.setattr(clock, "datetime", SkewedDatetime)
