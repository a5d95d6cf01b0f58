"""Test helpers for the capture of writes that bypass the adapter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from conftest import Database
from unistatus.db.engine import create_engine
from unistatus.db.tables import pending_legacy_changes, status_history, unified_transactions
from unistatus.migration import capture

# The application_name of the "cron job" that writes the legacy tables with raw SQL.
CRON = "cron-job"


def writer_name(db: Database) -> str:
    """The name the capture gives the raw writer of :func:`raw_writer`."""
    return f"bypass:{CRON}/postgres" if db.backend == "postgres" else "bypass:sqlite"


@contextmanager
def raw_writer(db: Database) -> Iterator[sa.Engine]:
    """An engine of the "cron job": its own connections (application_name on PostgreSQL),
    plain transactions, no unistatus in between."""
    if db.backend == "sqlite":
        yield db.engine
        return
    engine = create_engine(db.url, connect_args={"application_name": CRON})
    try:
        yield engine
    finally:
        engine.dispose()


def raw(db: Database, *statements: str, params: dict[str, Any] | None = None) -> None:
    """Run SQL as the cron job, in one transaction."""
    with raw_writer(db) as engine, engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params or {})


def unified_of(db: Database, system: str, legacy_id: int) -> dict[str, Any] | None:
    U = unified_transactions
    with db.engine.connect() as conn:
        row = (
            conn.execute(
                sa.select(U).where(U.c.legacy_system == system, U.c.legacy_id == legacy_id)
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def history_of(db: Database, system: str, legacy_id: int) -> list[dict[str, Any]]:
    H = status_history
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(H)
            .where(H.c.legacy_system == system, H.c.legacy_id == legacy_id)
            .order_by(H.c.id)
        ).mappings()
        # The metadata column's key is ``meta`` (``metadata`` is taken on a Table).
        return [{**dict(r), "meta": r["metadata"]} for r in rows]


def legacy_status(db: Database, table: str, legacy_id: int) -> Any:
    with db.engine.connect() as conn:
        q = sa.text(f"SELECT status FROM {table} WHERE id = :id")
        return conn.execute(q, {"id": legacy_id}).scalar_one()


@contextmanager
def captured(db: Database) -> Iterator[Database]:
    """Capture enabled for the block, then disabled (the PostgreSQL database is shared
    by the whole run: no trigger may outlive the test)."""
    capture.enable(db.engine, db.settings, actor="test", reason="test")
    try:
        yield db
    finally:
        capture.disable(db.engine, db.settings, actor="test", reason="test")


def outdate_capture(db: Database) -> None:
    """Make one installed definition of the capture what an earlier release would have
    installed: the cashouts' function (PostgreSQL) or one UPDATE trigger (SQLite), the
    same but for one comment or statement (``capture status``: ``sql_changed``)."""
    with db.engine.begin() as conn:
        function = "unistatus_capture_cashout"
        if db.backend == "postgres":
            body = conn.exec_driver_sql(
                f"SELECT pg_get_functiondef('{function}'::regproc)"
            ).scalar_one()
            conn.exec_driver_sql(body.replace("BEGIN", "BEGIN -- 0.9", 1))
        else:
            name, sql = conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                "AND name LIKE 'unistatus_capture_cashout_upd%' ORDER BY name"
            ).first()
            conn.exec_driver_sql(f'DROP TRIGGER "{name}"')
            conn.exec_driver_sql(sql.replace("BEGIN", "BEGIN SELECT 1;", 1))


def pending_of(db: Database, entity_id: str) -> list[tuple[Any, ...]]:
    """The changes of ``entity_id`` recorded for the replay: (legacy status, replayed)."""
    P = pending_legacy_changes
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(P.c.legacy_status, P.c.replayed_at.is_not(None))
            .where(P.c.transaction_id == entity_id)
            .order_by(P.c.id)
        ).all()
    return [tuple(r) for r in rows]
