"""The check's time inputs: ``--since`` (an ISO time or an age) and ``--max-duration``."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

from unistatus.clock import as_utc, utcnow
from unistatus.errors import InputError

__all__ = ["parse_duration", "parse_since"]

_RELATIVE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# How far past now an ISO --since may lie (clocks of two hosts disagree a little).
FUTURE_SLACK = timedelta(minutes=1)


def parse_since(
    value: str | datetime | None, *, now: datetime | None = None, judge_future: bool = True
) -> datetime | None:
    """An aware UTC time from an ISO time or a relative age like ``90s``, ``15m``, ``1h``,
    ``2d``, counted back from ``now`` (default: this host's clock). An ISO time past
    ``now`` is refused unless ``judge_future`` is off: where the database's clock will
    judge it, or has (a host behind it refused a time just before the database's now)."""
    if value is None or isinstance(value, datetime):
        return as_utc(value)
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        amount = float(match.group(1))
        try:
            return (now or utcnow()) - timedelta(**{_UNITS[match.group(2).lower()]: amount})
        except OverflowError:
            raise InputError(
                f"--since {value!r} reaches before the year 1: give a shorter age or an ISO time"
            ) from None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"--since {value!r} is neither an ISO time (2026-01-31T12:00:00Z) nor an age "
            "like 30s, 15m, 1h, 2d, 1w"
        ) from None
    since = as_utc(parsed)
    current = now or utcnow()
    if judge_future and since is not None and since > current + FUTURE_SLACK:
        raise InputError(
            f"--since {value!r} is in the future (now: {current.isoformat(timespec='seconds')}): "
            "nothing has changed after it yet"
        )
    return since


def parse_duration(value: str | float | None) -> float | None:
    """Seconds from ``90s``, ``10m``, ``1h`` or a plain number of seconds (None: no bound)."""
    if value is None or isinstance(value, int | float):
        return float(value) if value is not None else None
    text = value.strip()
    match = _RELATIVE.match(text)
    try:
        seconds = (
            timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))}).total_seconds()
            if match
            else float(text)
        )
    except (ValueError, OverflowError):
        seconds = -1.0
    if not 0 < seconds < math.inf:  # "inf" or 1e400 read as no bound (a probe)
        raise InputError(f"--max-duration {value!r}: give a duration like 90s, 10m or 1h")
    return seconds
