"""A host whose clock is wrong: every module of unistatus that reads the host's clock
(``unistatus.clock.utcnow``, imported by name) reads it ``ahead`` of the real time, as
under ``faketime`` (which the tests do not use: it would skew the database's clock on
SQLite too, and the test runner's own)."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

import pytest

from unistatus import clock


def host_clock_ahead(monkeypatch: pytest.MonkeyPatch, ahead: timedelta) -> None:
    """Until the test's monkeypatch is undone, unistatus's host clock runs ``ahead``."""
    real = clock.utcnow

    def skewed() -> datetime:
        return real() + ahead

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "unistatus" and getattr(module, "utcnow", None) is real:
            monkeypatch.setattr(module, "utcnow", skewed)
