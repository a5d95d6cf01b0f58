"""An application's own engine and a legacy row with PostgreSQL's infinite times.

unistatus reads an infinite time as a missing one on the engines it makes from a URL;
an application's own Engine (or the caller's connection, ``connection=``) reads values
as the application set it up, which unistatus does not change behind its back. The
application that wants the same reading installs the exported loader on its engine
(docs/adapter.md, "Infinite times on your own engine"). PostgreSQL only: SQLite has no
infinite time.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from conftest import Database
from support.adapters import adapter_in
from unistatus import CallerTransactionError, DualWriteMode, OperationEvent

M = DualWriteMode


def _legacy_row_with_infinite_times(db: Database) -> str:
    with db.app_engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
            "updated_at) VALUES (5000, 1, '10', 'USD', 'PENDING', 'infinity', '-infinity')"
        )
    return "cashout:5000"


def test_the_recipe_an_application_engine_reads_infinite_times_as_missing(
    pg: Database,
) -> None:
    from unistatus import read_infinite_times_as_missing

    ref = _legacy_row_with_infinite_times(pg)
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    application = sa.create_engine(pg.url)  # the application's own, not unistatus's
    event.listen(application, "connect", read_infinite_times_as_missing)  # the recipe
    try:
        with application.begin() as conn:
            # The application's own read of the row: the infinite times as None.
            times = conn.exec_driver_sql(
                "SELECT created_at, updated_at FROM cashouts WHERE id = 5000"
            ).one()
            result = a.update_status(ref, "PROCESSING", "r", "svc", connection=conn)
        assert result.overall_success, result.error
        assert tuple(times) == (None, None)
        assert [(e.operation, e.success) for e in events] == [("update_status", True)]
        status = a.get_transaction_status(ref)
        assert status is not None and status[0].value == "PROCESSING"
    finally:
        application.dispose()
        a.close()


def test_without_the_recipe_the_write_fails_and_writes_nothing(pg: Database) -> None:
    """What the docs say happens without it: a failed write (psycopg cannot read the
    time): CallerTransactionError, the caller's transaction to roll back; the
    application's engine is left as it was."""
    ref = _legacy_row_with_infinite_times(pg)
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    application = sa.create_engine(pg.url)
    outcome: Any
    try:
        with application.connect() as conn, conn.begin():
            try:
                outcome = a.update_status(ref, "PROCESSING", "r", "svc", connection=conn)
            except Exception as exc:
                outcome = exc
            conn.rollback()
        assert isinstance(outcome, CallerTransactionError)
        assert "DataError: timestamp too large" in str(outcome)
        with pytest.raises(Exception, match="timestamp too large"):
            with application.connect() as conn:
                conn.exec_driver_sql("SELECT created_at FROM cashouts WHERE id = 5000").one()
    finally:
        application.dispose()
        a.close()


def test_an_adapter_on_the_applications_engine_fails_the_write_without_the_recipe(
    pg: Database,
) -> None:
    """The adapter given the application's own Engine: a failed result (psycopg's
    DataError), nothing written; with the loader installed on that engine, it works."""
    from unistatus import DualWriteAdapter, read_infinite_times_as_missing

    ref = _legacy_row_with_infinite_times(pg)
    adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False).close()
    for installed in (False, True):
        application = sa.create_engine(pg.url)
        if installed:
            event.listen(application, "connect", read_infinite_times_as_missing)
        a = DualWriteAdapter(application, settings=pg.settings, record_stats=False)
        try:
            result = a.update_status(ref, "PROCESSING", "r", "svc")
            if installed:
                assert result.overall_success, result.error
            else:
                assert not result.overall_success and not result.outcome_unknown
                assert "DataError: timestamp too large" in (result.error or "")
        finally:
            a.close()
            application.dispose()
