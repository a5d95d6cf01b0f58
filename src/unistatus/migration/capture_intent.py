"""The operator's intent for the capture, in the control table (and its log): enabled
or disabled (:func:`is_enabled`, and since when: :func:`enabled_since`), and the extra
legacy values the installed triggers were generated from (:func:`record_mapping`,
compared with :func:`mapping_now` by ``capture status``).

Split from :mod:`unistatus.migration.capture`, whose ``enable`` and ``disable`` record
them.
"""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa

from unistatus.clock import as_utc
from unistatus.db.control import write_value
from unistatus.db.mode_reads import read_value
from unistatus.db.tables import control_log
from unistatus.domain.mapping import extra_statuses

__all__ = [
    "CONTROL_KEY",
    "DISABLED",
    "ENABLED",
    "MAPPING_KEY",
    "enabled_since",
    "is_enabled",
    "mapping_now",
    "record_mapping",
]

# The operator's intent, in the control table (and its log): "enabled" or "disabled".
CONTROL_KEY = "capture"
ENABLED, DISABLED = "enabled", "disabled"
# The extra legacy values the installed triggers were generated from (JSON): the triggers
# hold the mapping as it was then, so a value configured since is theirs only after
# `enable` runs again.
MAPPING_KEY = "capture_mapping"


def record_mapping(conn: sa.Connection, actor: str) -> None:
    """The extra legacy values the triggers just installed map, if not recorded yet
    (``capture status`` compares them with the configuration's)."""
    if read_value(conn, MAPPING_KEY) != mapping_now():
        reason = "the extra legacy values the capture triggers map"
        write_value(conn, MAPPING_KEY, mapping_now(), actor=actor, reason=reason)


def mapping_now() -> str:
    """The extra legacy values of this process, as the triggers would be generated now."""
    extras = {s.value: dict(sorted(v.items())) for s, v in extra_statuses().items() if v}
    return json.dumps(extras, sort_keys=True)


def is_enabled(conn: sa.Connection) -> bool:
    """The operator's intent (what ``enable`` / ``disable`` last recorded)."""
    return read_value(conn, CONTROL_KEY) == ENABLED


def enabled_since(conn: sa.Connection) -> datetime | None:
    """Since when capture has been enabled without a break (None: it is not enabled):
    the first ``enabled`` after the last ``disabled`` in the control log. What a window
    of "no bypass write" can prove starts there."""
    if not is_enabled(conn):
        return None
    L = control_log
    mine = L.c.key == CONTROL_KEY
    last_off = sa.select(sa.func.max(L.c.id)).where(mine, L.c.new_value == DISABLED)
    first_on = sa.select(sa.func.min(L.c.created_at)).where(
        mine,
        L.c.new_value == ENABLED,
        L.c.id > sa.func.coalesce(last_off.scalar_subquery(), 0),
    )
    return as_utc(conn.execute(first_on).scalar_one_or_none())
