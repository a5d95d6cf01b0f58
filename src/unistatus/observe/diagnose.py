"""One JSON document for the investigation phase of a rollback (``unistatus diagnose``;
docs/runbook.md).

Each section is gathered on its own by ``_section``: a section that raises (a database
error, a missing table, one of our typed errors, or anything else: this runs in the
middle of an incident) becomes ``{"error": "..."}`` and the rest is still collected.
Secrets never leave: tokens are replaced, database passwords are removed in every form
(:func:`unistatus.redact.redact`, applied to every string of the document), and webhook
URLs (which embed their credentials in the path) keep only scheme and host.
"""

from __future__ import annotations

import logging
import platform
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import alembic
import sqlalchemy as sa

from unistatus.backfill import progress, quarantine_count
from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db import schema
from unistatus.db.binding import schema_of
from unistatus.db.bounded_reads import bounded_reads
from unistatus.db.catalog import all_tables
from unistatus.db.connection_setup import announced_pid
from unistatus.db.control import ControlChange, history
from unistatus.db.ddl_wait import read_blockers
from unistatus.db.dialect import ops_for
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.mode_reads import MIXED
from unistatus.db.revisions import schema_problem
from unistatus.db.search_path import search_path
from unistatus.db.tables import repair_queue
from unistatus.db.tables_backfill import backfill_quarantine as Q
from unistatus.db.tables_check import check_reports as R
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import SchemaOutdatedError
from unistatus.migration.phases import phase_statuses, read_system_states, together_status
from unistatus.migration.replay import pending_count
from unistatus.migration.replay_conflicts import list_conflicts, open_conflict_count
from unistatus.migration.unreplayed import unreplayed_note, unreplayed_outside_unified_only
from unistatus.observe.alert_state import load_states
from unistatus.observe.bypass import read_bypass_writers
from unistatus.observe.stats import window
from unistatus.redact import REDACTED, redact, redact_values, redact_webhook
from unistatus.version import VERSION

__all__ = ["REDACTED", "default_filename", "generate_diagnostic", "redact_settings"]

log = logging.getLogger("unistatus.observe.diagnose")

SECRET_KEY = re.compile(r"token|password|secret|api_key|credential", re.IGNORECASE)
OPERATIONS = ("create_transaction", "update_status", "get_transaction_status")
CONTROL_KEYS = ("mode", "phase", "last_rollback", "backfill.paused")


def default_filename(now: datetime | None = None) -> str:
    """``rollback_<UTC time>.json``, the name the runbook refers to."""
    return f"rollback_{(now or utcnow()).strftime('%Y%m%dT%H%M%SZ')}.json"


def _redact(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact(str(k), v) for k, v in value.items()}
    if SECRET_KEY.search(key):
        return REDACTED if value else value
    if isinstance(value, list):
        return [_redact(key, v) for v in value]
    return value


def redact_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings with every secret removed."""
    data = settings.model_dump(mode="json")
    data["database_url"] = redact(settings.database_url)
    data["webhook_urls"] = [redact_webhook(u) for u in settings.webhook_urls]
    # Named API tokens: their names and roles help an investigation, their values never.
    data["api_tokens"] = [
        {"name": t.name, "role": t.role, "token": REDACTED} for t in settings.api_tokens
    ]
    return {k: v if k == "api_tokens" else _redact(k, v) for k, v in data.items()}


def _section(name: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # one broken section must not lose the others
        # The first line: SQLAlchemy's next ones are the statement's SQL, not for a terminal.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        log.warning("diagnostic section %s failed: %s", name, redact(first))
        return {"error": redact(f"{type(exc).__name__}: {first}")}


def _versions(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        info = conn.dialect.server_version_info
    install, retire = schema.head_revisions()
    return {
        "unistatus": VERSION,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlalchemy": sa.__version__,
        "alembic": alembic.__version__,
        "database": engine.dialect.name,
        "database_server": ".".join(str(p) for p in info) if info else None,
        # Where the database is (0006 while the legacy columns are retired), and the
        # head of each branch: what `init` installs, and the retirement's revision.
        "schema_revision": schema.current_revision(engine),
        "schema_revisions_stored": list(schema.current_heads(engine)),
        "schema_install_head": install,
        "schema_retire_head": retire,
        "schema_finding": schema_finding(tuple(schema.current_heads(engine))),
    }


def schema_finding(stored: tuple[str, ...]) -> str | None:
    """What keeps this release's commands off the database's schema (None: nothing): a
    finding to report, where every other command refuses it (:mod:`unistatus.db.revisions`)."""
    problem = schema_problem(stored)
    if isinstance(problem, SchemaOutdatedError):
        return (
            f"schema at revision {problem.found}, this release needs {problem.needed}: "
            "run `unistatus init`"
        )
    return None if problem is None else str(problem)


def _database_role(engine: sa.Engine) -> dict[str, Any]:
    """Who unistatus is in the database, and whether it sees other roles' sessions in
    full (without it, the backfill's ramp and verification's wait see them only in a
    transaction, and no replication lag: docs/backfill.md)."""
    with engine.connect() as conn:
        view = ops_for(engine).activity_view(conn)
    role, full = view if view is not None else (None, None)
    return {"role": role, "reads_all_activity": full}


_SESSION = sa.text(
    "SELECT pg_backend_pid(), current_setting('default_transaction_isolation'), "
    "current_setting('lock_timeout'), current_setting('statement_timeout'), "
    "current_setting('idle_in_transaction_session_timeout')"
)


def _connection(engine: sa.Engine) -> dict[str, Any]:
    """How unistatus's connections reach the server and what they carry (PostgreSQL):
    through a connection pooler or not, prepared statements, the isolation level of its
    write transactions and the session's own, the timeouts, and where bare table names
    go (README, "Behind a connection pooler"; :mod:`unistatus.db.search_path`)."""
    if engine.dialect.name != "postgresql":
        return {"database": engine.dialect.name}
    with ops_for(engine).write_transaction() as conn:  # as unistatus's own writes run
        raw = conn.connection.dbapi_connection
        write_level = conn.exec_driver_sql("SHOW transaction_isolation").scalar_one()
        serving, default_level, lock_ms, statement_ms, idle_ms = conn.execute(_SESSION).one()
        where = search_path(conn)
    return {
        "through_a_pooler": announced_pid(raw) != int(serving),
        "prepared_statements": getattr(raw, "prepare_threshold", None) is not None,
        "write_transactions": write_level,
        "server_default_isolation": default_level,
        "lock_timeout": lock_ms,
        "statement_timeout": statement_ms,
        "idle_in_transaction_session_timeout": idle_ms,
        "search_path": where.path,
        # The first schema of the path that exists, the compatibility views' left out.
        "current_schema": where.current,
        "compat_views_on_path": where.compat_views,
        # The schema setting's, or (the default layout) the one the search_path reaches.
        "installed_in": schema_of(engine) or where.found_in,
    }


def _control(engine: sa.Engine) -> dict[str, Any]:
    states = read_system_states(engine)
    modes = {mode for mode, _ in states.values()}
    phases = {phase for _, phase in states.values()}
    logged = {key: history(engine, key, limit=50) for key in CONTROL_KEYS}
    return {
        # Every system's mode and phase while they agree, "mixed" while they differ.
        "mode": modes.pop().value if len(modes) == 1 else MIXED,
        "phase": phases.pop() if len(phases) == 1 else MIXED,
        "systems": {
            system.value: {"mode": mode.value, "phase": phase}
            for system, (mode, phase) in states.items()
        },
        "history": {key: [c.as_dict() for c in logged[key]] for key in CONTROL_KEYS},
        "disagrees_with_history": _disagreements(states, logged),
    }


def _disagreements(
    states: dict[LegacySystemType, tuple[DualWriteMode, int]],
    logged: dict[str, list[ControlChange]],
) -> list[dict[str, Any]]:
    """Each system's mode or phase that differs from the newest control-log entry that
    set it: the control rows were lost or written behind unistatus's back (a data-only
    restore whose control rows failed to load read LEGACY_ONLY, phase 0, while its
    history ended in dual write). Empty: they agree (or nothing was logged)."""
    out = []
    for system, (mode, phase) in states.items():
        for key, now in (("mode", mode.value), ("phase", str(phase))):
            own = f"{key}.{system.value}"
            last = next((c for c in logged[key] if c.key in (own, key)), None)
            if last is not None and last.new_value != now:
                out.append(
                    {
                        "system": system.value,
                        "key": key,
                        "control": now,
                        "newest_history": last.new_value,
                        "logged_at": last.created_at.isoformat(),
                    }
                )
    return out


def _gates(engine: sa.Engine, settings: Settings) -> dict[str, Any]:
    """The next phase's gates of every system together while they are in one phase
    ("phase": "mixed" otherwise), and each system's on its own data (``systems``)."""
    each = phase_statuses(engine, settings)
    together = together_status(engine, settings, each)
    out: dict[str, Any] = (
        together.as_dict() if together is not None else {"phase": MIXED, "gates": []}
    )
    out["systems"] = {system.value: st.as_dict() for system, st in each.items()}
    return out


def _checks(engine: sa.Engine) -> list[dict[str, Any]]:
    cols = [
        R.c.id,
        R.c.scope,
        R.c.since,
        R.c.total,
        R.c.consistent,
        R.c.consistency_rate,
        R.c.inconsistencies,
        R.c.per_system,
        R.c.examples,
        R.c.duration_ms,
        R.c.created_at,
    ]
    q = sa.select(*cols).order_by(R.c.created_at.desc(), R.c.id.desc()).limit(5)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def _alerts(engine: sa.Engine) -> list[dict[str, Any]]:
    return [s.as_dict() for s in load_states(engine)]


def _repair_queue(engine: sa.Engine) -> dict[str, Any]:
    q = repair_queue
    open_ = q.c.resolved_at.is_(None)
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(q).where(open_)).scalar_one()
        recent = conn.execute(sa.select(q).where(open_).order_by(q.c.id.desc()).limit(20))
        return {"open": int(count), "recent_open": [dict(r) for r in recent.mappings()]}


def _quarantine(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        recent = conn.execute(
            sa.select(Q)
            .where(Q.c.resolved_at.is_(None))
            .order_by(Q.c.last_seen_at.desc())
            .limit(20)
        ).mappings()
        rows = [dict(r) for r in recent]
    return {"unresolved": quarantine_count(engine), "recent_unresolved": rows}


def _stats(engine: sa.Engine) -> dict[str, Any]:
    out: dict[str, Any] = {
        "last_5_min": window(engine, 300).as_dict(),
        "last_hour": window(engine, 3600).as_dict(),
    }
    out["per_operation_last_hour"] = {
        op: window(engine, 3600, operation=op).as_dict() for op in OPERATIONS
    }
    return out


def _table_counts(engine: sa.Engine, settings: Settings) -> dict[str, Any]:
    tables = all_tables()
    legacy = _section(
        "legacy", lambda: resolve_legacy_tables(engine, settings, require_status=False)
    )
    if isinstance(legacy, dict) and "error" not in legacy:
        tables += [lt.table for lt in legacy.values()]
    inspector = sa.inspect(engine)
    counts: dict[str, Any] = {}
    with engine.connect() as conn:
        for table in tables:
            # Ours in their schema, the legacy tables in the application's.
            if not inspector.has_table(table.name, schema=conn.schema_for_object(table)):
                counts[table.name] = None
                continue
            counts[table.name] = int(
                conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            )
    return counts


def _pending(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        stale = unreplayed_outside_unified_only(conn)
    return {
        "unreplayed": pending_count(engine),
        # Of systems no longer in UNIFIED_ONLY: legacy is stale for them.
        "unreplayed_outside_unified_only": {s.value: n for s, n in stale.items()},
        "note": unreplayed_note(stale),
    }


def _replay_conflicts(engine: sa.Engine) -> dict[str, Any]:
    """Changes the replay to legacy did not apply (open and resolved, oldest first)."""
    return {
        "open": open_conflict_count(engine),
        "conflicts": [c.as_dict() for c in list_conflicts(engine, include_resolved=True)],
    }


# Each lock wait of a section at most this long (``lock_timeout_ms`` if shorter): behind
# a session holding a table (a migration's DDL, a LOCK TABLE) every section that reads it
# fails, and the diagnostic comes in seconds, naming that session (``table_locks``).
SECTION_LOCK_WAIT_MS = 1_000


def _table_locks(engine: sa.Engine) -> list[dict[str, Any]]:
    """The sessions holding one of the database's tables ACCESS EXCLUSIVE, or queued for
    that (PostgreSQL: what a read waits for; SQLite readers wait for no lock)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        return read_blockers(conn)


def generate_diagnostic(engine: sa.Engine, settings: Settings) -> dict[str, Any]:
    """Everything an investigation needs, as one JSON-serialisable dict. Each lock wait
    of a section at most :data:`SECTION_LOCK_WAIT_MS` (a section kept waiting fails;
    ``table_locks`` names whom it waited for)."""
    lock_ms = settings.lock_timeout_ms
    engine = bounded_reads(
        engine,
        min(lock_ms, SECTION_LOCK_WAIT_MS) if lock_ms else SECTION_LOCK_WAIT_MS,
        statements=False,
    )
    document = {
        "generated_at": utcnow().isoformat(),
        "versions": _section("versions", lambda: _versions(engine)),
        "database_role": _section("database_role", lambda: _database_role(engine)),
        "connection": _section("connection", lambda: _connection(engine)),
        "config": _section("config", lambda: redact_settings(settings)),
        "control": _section("control", lambda: _control(engine)),
        "gates": _section("gates", lambda: _gates(engine, settings)),
        "check_reports": _section("check_reports", lambda: _checks(engine)),
        "alerts": _section("alerts", lambda: _alerts(engine)),
        "repair_queue": _section("repair_queue", lambda: _repair_queue(engine)),
        "quarantine": _section("quarantine", lambda: _quarantine(engine)),
        "backfill": _section("backfill", lambda: _backfill(engine, settings)),
        "pending_legacy_changes": _section("pending", lambda: _pending(engine)),
        "replay_conflicts": _section("replay_conflicts", lambda: _replay_conflicts(engine)),
        "capture": _section("capture", lambda: read_bypass_writers(engine).as_dict()),
        "operation_stats": _section("operation_stats", lambda: _stats(engine)),
        "table_counts": _section("table_counts", lambda: _table_counts(engine, settings)),
        "table_locks": _section("table_locks", lambda: _table_locks(engine)),
    }
    redacted: dict[str, Any] = redact_values(document)
    return redacted


def _backfill(engine: sa.Engine, settings: Settings) -> Any:
    return progress(engine, settings)
