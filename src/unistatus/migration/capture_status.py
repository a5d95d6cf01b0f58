"""What ``capture status`` reports: the capture's triggers installed, against what the
intent asks for and what this code generates now, with the writers seen and the pending
catch-up (:class:`CaptureStatus`, :func:`status`).

Split from :mod:`unistatus.migration.capture`, whose ``enable`` and ``disable`` return
it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.dialect import ops_for
from unistatus.db.id_reuse import ids_reused
from unistatus.db.legacy import LegacyTable
from unistatus.db.mode_reads import read_value
from unistatus.db.revisions import require_current_schema
from unistatus.db.tables_capture import capture_changed
from unistatus.migration.capture_catalog import installed, installed_definitions
from unistatus.migration.capture_ddl import CaptureDdl
from unistatus.migration.capture_intent import MAPPING_KEY, is_enabled, mapping_now
from unistatus.migration.capture_names import Trigger, definitions
from unistatus.migration.capture_tables import (
    capturable,
    install_statements,
    status_columns_gone,
    under_each,
)
from unistatus.migration.capture_writers import WriterSeen, writers_seen

__all__ = ["CaptureStatus", "status", "status_generated"]


@dataclass
class CaptureStatus:
    """What is installed, against what the intent (``enabled``) asks for."""

    enabled: bool
    installed: list[Trigger]
    expected: list[Trigger]
    functions: list[str]
    suspended: list[str] = field(default_factory=list)  # tables whose status is retired
    # Tables whose status column is gone but not retired by unistatus (renamed behind
    # its back: capture_tables.status_columns_gone).
    status_column_gone: list[str] = field(default_factory=list)
    writers: list[WriterSeen] = field(default_factory=list)
    changed_while_legacy_only: int = 0
    # Enabled, and the configured mapping is not the one the triggers were generated from.
    mapping_changed: bool = False
    # Enabled, and an installed definition is not what this code generates now (an
    # earlier unistatus generated it, or another configuration): `enable` again.
    sql_changed: bool = False
    # Legacy tables that may hand a deleted row's id out again (db.id_reuse).
    ids_reused: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The catalog holds exactly what the intent asks for, from the current mapping."""
        want = self.expected if self.enabled else []
        return (
            sorted(self.installed, key=_key) == sorted(want, key=_key)
            and not self.disabled
            and not self.status_column_gone
            and (self.enabled or not self.functions)
            and not self.mapping_changed
            and not self.sql_changed
        )

    @property
    def disabled(self) -> list[Trigger]:
        """Installed but disabled (``ALTER TABLE ... DISABLE TRIGGER``): a write to their
        table is not captured, while the catalog still lists them."""
        return [t for t in self.installed if t.disabled]

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "ok": self.ok,
            "triggers": [{"name": t.name, "table": t.table} for t in self.installed],
            "missing": [
                {"name": t.name, "table": t.table}
                for t in self.expected
                if self.enabled and t not in self.installed
            ],
            "disabled": [{"name": t.name, "table": t.table} for t in self.disabled],
            "functions": list(self.functions),
            "suspended": list(self.suspended),
            "status_column_gone": list(self.status_column_gone),
            "changed_while_legacy_only": self.changed_while_legacy_only,
            "ids_reused": list(self.ids_reused),
            "mapping_changed": self.mapping_changed,
            "sql_changed": self.sql_changed,
            "writers": [w.as_dict() for w in self.writers],
        }


def _key(t: Trigger) -> tuple[str, str]:
    return (t.name, t.table)


# What :func:`_sql_changed` found, by what it depends on: the generated SQL is this
# process's code applied to its configuration, so the same catalog, tables and mapping
# get the same answer, and generating it (a quarter of a second) is not repeated on
# every gate evaluation (``/metrics``, the dashboards, ``monitor``).
_compared: dict[str, bool] = {}
_COMPARED_KEPT = 64


def _sql_changed(
    conn: sa.Connection, ddl: CaptureDdl, tables: list[LegacyTable], generated: list[str] | None
) -> bool:
    """Whether an installed definition differs from what
    :func:`unistatus.migration.capture.enable` would install now (``generated``: those
    statements, if at hand; one missing is :attr:`CaptureStatus.installed`'s business)."""
    catalog = installed_definitions(conn)
    inputs = [
        conn.engine.url.render_as_string(hide_password=True),
        ddl.ops.schema,
        ddl.ops.mode_lock_key,
        mapping_now(),
        # The columns' types too: the triggers cast an enum status (LegacyTable.as_text).
        sorted((lt.table.fullname, [(c.name, str(c.type)) for c in lt.table.c]) for lt in tables),
        sorted(catalog.items()),
    ]
    key = hashlib.sha256(json.dumps(inputs, default=str).encode()).hexdigest()
    if generated is None:
        if key in _compared:
            return _compared[key]
        generated = install_statements(ddl, conn, tables, ddl.ops.mode_lock_key)
    wanted = definitions(generated, postgres=conn.dialect.name == "postgresql")
    changed = any(name in catalog and catalog[name] != text for name, text in wanted.items())
    if len(_compared) >= _COMPARED_KEPT:
        _compared.clear()
    _compared[key] = changed
    return changed


def status(engine: sa.Engine, settings: Settings) -> CaptureStatus:
    """The installed triggers against the intent, the writers seen, the pending catch-up."""
    return status_generated(engine, settings, None)


def status_generated(
    engine: sa.Engine, settings: Settings, generated: list[str] | None
) -> CaptureStatus:
    """:func:`status`, with the statements ``enable`` just installed (``generated``, if at
    hand: compared with the catalog without generating them again)."""
    require_current_schema(engine, "capture")
    tables, retired = capturable(engine, settings)
    ddl = CaptureDdl(ops_for(engine), engine.dialect)
    with engine.connect() as conn:
        enabled = is_enabled(conn)
        triggers, functions = installed(conn)
        generated_from = read_value(conn, MAPPING_KEY)
        sql_changed = enabled and bool(triggers) and _sql_changed(conn, ddl, tables, generated)
        changed = conn.execute(sa.select(sa.func.count()).select_from(capture_changed))
        pending = int(changed.scalar_one())
        writers = writers_seen(conn)
        under = under_each(conn, tables)
        reused = ids_reused(conn, tables)
        gone = status_columns_gone(conn, retired)
    return CaptureStatus(
        enabled=enabled,
        installed=triggers,
        expected=ddl.triggers(tables, under),
        functions=functions,
        suspended=[] if gone or not enabled else retired,
        status_column_gone=gone,
        writers=writers,
        changed_while_legacy_only=pending,
        # None: enabled before the mapping was recorded (nothing to compare with).
        mapping_changed=enabled and generated_from not in (None, mapping_now()),
        sql_changed=sql_changed,
        ids_reused=reused,
    )
