"""The caller's connection reaches the tables the adapter works on, and is usable by it.

Found by a probe of an application embedding the adapter: a tenant's ``search_path``
sent the legacy write to the tenant's table and the unified one to unistatus's (both
said success); a search_path that reaches none of unistatus's tables, or a connection
lost before the first statement, were raised with nothing observed or as an
interruption; a connection streaming its results (``stream_results``, ``yield_per``)
made every status change a syntax error, and a READ ONLY transaction a database
failure; SQLite's connection of another file was written; an ORM Session kept past its
end (``expire_on_commit=False``) could no longer read the row the adapter changed.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from conftest import Database
from support.adapters import adapter_in
from unistatus import CallerTransactionError, DualWriteAdapter, DualWriteMode, OperationEvent
from unistatus.db.engine import create_engine
from unistatus.errors import InputError

M = DualWriteMode


def watched(
    db: Database, mode: DualWriteMode = M.DUAL_WRITE_LEGACY_PRIMARY
) -> tuple[DualWriteAdapter, str, list[OperationEvent]]:
    """An adapter in ``mode``, a PENDING cashout, its events from now on."""
    a = adapter_in(db, mode, record_stats=False)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    return a, str(created.entity_id), events


def statuses(db: Database, entity_id: str) -> tuple[str, str]:
    """The unified status and the legacy one of ``entity_id``."""
    with db.engine.connect() as conn:
        unified, legacy_id = conn.execute(
            sa.text("SELECT status, legacy_id FROM unified_transactions WHERE id = :i"),
            {"i": entity_id},
        ).one()
        legacy = conn.execute(
            sa.text("SELECT status FROM cashouts WHERE id = :i"), {"i": legacy_id}
        ).scalar_one()
    return str(unified), str(legacy)


@pytest.mark.postgres
def test_a_search_path_that_finds_a_legacy_table_elsewhere_is_refused(pg: Database) -> None:
    """A schema-per-tenant application sets its tenant's schema first: ``cashouts`` was
    then the tenant's table for the legacy write and unistatus's row stayed PENDING,
    while unified said PROCESSING; a create inserted the tenant's row and linked a
    unified row to an id of the other table. Refused, nothing written anywhere."""
    a, entity_id, events = watched(pg)
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA tenant_a")
        conn.exec_driver_sql("CREATE TABLE tenant_a.cashouts (LIKE public.cashouts INCLUDING ALL)")
        conn.exec_driver_sql("INSERT INTO tenant_a.cashouts SELECT * FROM public.cashouts")
    try:
        with pg.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("SET LOCAL search_path TO tenant_a, public")
            with pytest.raises(InputError, match=r"search_path .*tenant_a\.cashouts"):
                a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
            with pytest.raises(InputError, match="search_path"):
                a.create_transaction("WALLET_CASHOUT", 2, "5", "USD", connection=conn)
        assert pg.scalar("SELECT count(*) FROM tenant_a.cashouts") == 1
        assert pg.scalar("SELECT status FROM tenant_a.cashouts") == "PENDING"
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA tenant_a CASCADE")
    assert statuses(pg, entity_id) == ("PENDING", "PENDING")
    assert pg.count("cashouts") == 1
    assert [(e.operation, e.refused, e.error_kind) for e in events] == [
        ("update_status", True, None),
        ("create_transaction", True, None),
    ]
    # The same connection with the search_path unistatus's own connections have: written.
    with pg.engine.connect() as conn, conn.begin():
        a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
    assert statuses(pg, entity_id) == ("PROCESSING", "EXECUTING")
    a.close()


@pytest.mark.postgres
def test_a_search_path_that_reaches_none_of_unistatus_tables_is_refused_and_observed(
    pg: Database,
) -> None:
    """A transaction born unified is looked up on the caller's connection: with a
    search_path that reaches none of unistatus's tables the look-up failed, raised with
    no observer told. Refused before any read, observed once."""
    a, _, events = watched(pg, M.UNIFIED_ONLY)
    born = str(a.create_transaction("WALLET_CASHOUT", 2, "5", "USD").entity_id)
    fresh = DualWriteAdapter(pg.engine, settings=pg.settings, record_stats=False)
    seen: list[OperationEvent] = []
    fresh.observers.append(seen.append)
    with pg.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET LOCAL search_path TO pg_catalog")
        with pytest.raises(InputError, match="search_path"):
            fresh.update_status(born, "PROCESSING", "paid", "svc", connection=conn)
    assert [(e.operation, e.refused) for e in seen] == [("update_status", True)]
    fresh.close()
    a.close()


@pytest.mark.postgres
def test_a_connection_lost_before_the_first_statement_is_a_database_failure(
    pg: Database,
) -> None:
    """The caller's server process ended (a failover, an idle-session kill) before the
    call: a change of a transaction looked up on that connection leaked SQLAlchemy's
    OperationalError and was observed as an interruption, outside the error rate."""
    a, _, events = watched(pg, M.UNIFIED_ONLY)
    born = str(a.create_transaction("WALLET_CASHOUT", 2, "5", "USD").entity_id)
    fresh = DualWriteAdapter(pg.engine, settings=pg.settings, record_stats=False)
    seen: list[OperationEvent] = []
    fresh.observers.append(seen.append)
    with pg.engine.connect() as conn:
        conn.begin()
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with pg.engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(CallerTransactionError):
            fresh.update_status(born, "PROCESSING", "paid", "svc", connection=conn)
        conn.rollback()
    assert [(e.success, e.rolled_back, e.error_kind) for e in seen] == [
        (False, False, "database")
    ], seen
    fresh.close()
    a.close()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "options", [{"stream_results": True}, {"yield_per": 100}], ids=["stream_results", "yield_per"]
)
def test_a_connection_streaming_its_results_writes_as_any_other(
    pg: Database, options: dict[str, object]
) -> None:
    """A batch job streams rows on the connection it changes statuses on: the adapter's
    statements ran in a server-side cursor, and every change failed with a syntax error
    counted as the database's failure. The caller's options are its own again after."""
    a, _, events = watched(pg)
    # A row the application inserted itself: its unified row is made by the change.
    with pg.engine.begin() as conn:
        legacy_id = conn.exec_driver_sql(
            "INSERT INTO cashouts (user_id, amount, currency, status, created_at, updated_at) "
            "VALUES (1, 10, 'USD', 'PENDING', now(), now()) RETURNING id"
        ).scalar_one()
    entity_id = f"cashout:{legacy_id}"
    with pg.engine.connect() as conn:
        conn.execution_options(**options)
        with conn.begin():
            result = a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
            assert result.overall_success, result
            changed = result.entity_id
        assert all(conn.get_execution_options().get(k) == v for k, v in options.items())
    assert statuses(pg, str(changed)) == ("PROCESSING", "EXECUTING")
    assert [(e.success, e.error_kind) for e in events] == [(True, None)]
    a.close()


@pytest.mark.postgres
def test_a_read_only_transaction_is_refused_not_counted_as_a_failure(pg: Database) -> None:
    """``postgresql_readonly=True`` (a reporting connection handed over by mistake): the
    write failed as the database's failure, feeding the error rate and the alerts."""
    a, entity_id, events = watched(pg)
    with pg.engine.connect() as plain:
        conn = plain.execution_options(postgresql_readonly=True)
        with conn.begin():
            with pytest.raises(InputError, match="READ ONLY"):
                a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
    assert statuses(pg, entity_id) == ("PENDING", "PENDING")
    assert [(e.refused, e.error_kind) for e in events] == [(True, None)]
    a.close()


def test_a_sqlite_connection_of_another_file_is_refused(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """The application's engine on a copy of the database file (a restored backup, a
    fixture): the adapter wrote both sides there and said success."""
    a, entity_id, events = watched(sqlite_db)
    copy = tmp_path / "copy.db"
    database = sqlite_db.engine.url.database
    assert database
    with closing(sqlite3.connect(database)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)  # the database as it stands, its WAL included
    other = sa.create_engine(f"sqlite:///{copy}")
    try:
        with other.connect() as conn, conn.begin():
            with pytest.raises(InputError, match="another database"):
                a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
            with pytest.raises(InputError, match="another database"):
                a.create_transaction("WALLET_CASHOUT", 2, "5", "USD", connection=conn)
        with other.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM cashouts").scalar_one() == 1
            assert conn.exec_driver_sql("SELECT status FROM cashouts").scalar_one() == "PENDING"
    finally:
        other.dispose()
    assert [(e.operation, e.refused) for e in events] == [
        ("update_status", True),
        ("create_transaction", True),
    ]
    a.close()


class _Base(DeclarativeBase):
    pass


class _Cashout(_Base):
    __tablename__ = "cashouts"
    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    status: Mapped[str | None]
    updated_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True))


@pytest.mark.parametrize("backend", ["sqlite_db", "pg"])
def test_a_session_kept_past_its_end_reads_the_row_the_adapter_changed(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """``Session(expire_on_commit=False)`` keeps its objects readable once it is closed:
    the adapter expired the row's status, so reading it after the session ended raised
    DetachedInstanceError. The status it wrote is read back in the transaction instead."""
    db: Database = request.getfixturevalue(backend)
    a, entity_id, _ = watched(db)
    legacy_id = int(
        db.scalar("SELECT legacy_id FROM unified_transactions WHERE id = :i", i=entity_id)
    )
    session = Session(db.app_engine, expire_on_commit=False)
    with session.begin():
        row = session.get(_Cashout, legacy_id)
        assert row is not None and row.status == "PENDING"
        a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=session)
    session.close()
    assert row.status == "EXECUTING"
    a.close()


@pytest.mark.postgres
def test_each_adapter_judges_the_callers_connection_by_its_own_tables(pg: Database) -> None:
    """The verdict was kept on the connection for its transaction whoever judged it: an
    adapter whose own connections find a tenant's tables wrote, after another adapter
    had accepted the transaction, into unistatus's (a review)."""
    a, entity_id, _ = watched(pg)
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA tenant_b")
        conn.exec_driver_sql("CREATE TABLE tenant_b.cashouts (LIKE public.cashouts INCLUDING ALL)")
    tenant = create_engine(pg.url, connect_args={"options": "-c search_path=tenant_b,public"})
    try:
        b = DualWriteAdapter(tenant, settings=pg.settings, record_stats=False)
        with pg.engine.connect() as conn, conn.begin():
            assert a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
            with pytest.raises(InputError, match="search_path"):
                b.create_transaction("WALLET_CASHOUT", 2, "5", "USD", connection=conn)
            conn.rollback()
        b.close()
    finally:
        tenant.dispose()
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA tenant_b CASCADE")
    a.close()


@pytest.mark.postgres
def test_a_table_swapped_while_the_adapter_runs_is_found_again(pg: Database) -> None:
    """A legacy table swapped by a rename (an online schema change, a restore) has
    another oid than the adapter found at start: every caller's write was refused until
    the process restarted, while its own connections wrote the new table (a review)."""
    a, entity_id, _ = watched(pg)
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE cashouts_new (LIKE cashouts INCLUDING ALL)")
        conn.exec_driver_sql("INSERT INTO cashouts_new SELECT * FROM cashouts")
        conn.exec_driver_sql("ALTER TABLE cashouts RENAME TO cashouts_old")
        conn.exec_driver_sql("ALTER TABLE cashouts_new RENAME TO cashouts")
    try:
        with pg.engine.connect() as conn, conn.begin():
            result = a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
            assert result.overall_success, result
        assert statuses(pg, entity_id) == ("PROCESSING", "EXECUTING")
    finally:  # the table as it was, for the next tests
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE cashouts")
            conn.exec_driver_sql("ALTER TABLE cashouts_old RENAME TO cashouts")
    a.close()


@pytest.mark.postgres
def test_the_compatibility_views_first_on_the_path_are_not_taken_for_the_tables(
    pg: Database,
) -> None:
    """unistatus resolves a bare name without the compatibility schema (docs/retire.md):
    a caller whose search_path puts ``unistatus_compat`` first (a reader converted to the
    views, that also writes through the adapter) is not refused for it."""
    a, entity_id, _ = watched(pg)
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA unistatus_compat")
        conn.exec_driver_sql("CREATE VIEW unistatus_compat.cashouts AS SELECT * FROM cashouts")
    try:
        with pg.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("SET LOCAL search_path TO unistatus_compat, public")
            result = a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=conn)
            assert result.overall_success, result
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA unistatus_compat CASCADE")
    a.close()


@pytest.mark.postgres
def test_a_session_whose_legacy_model_is_bound_elsewhere_reads_the_change_after_commit(
    pg: Database,
) -> None:
    """A Session of several binds, the legacy model on a second engine: the refresh
    read through that engine's connection, which cannot see the adapter's uncommitted
    write, and left the old status loaded (a review). Expired there instead: read once
    the change is committed."""
    a, entity_id, _ = watched(pg)
    legacy_id = int(
        pg.scalar("SELECT legacy_id FROM unified_transactions WHERE id = :i", i=entity_id)
    )
    other = create_engine(pg.url)
    try:
        session = Session(pg.app_engine, binds={_Cashout: other}, expire_on_commit=False)
        with session.begin():
            row = session.get(_Cashout, legacy_id)
            assert row is not None and row.status == "PENDING"
            a.update_status(entity_id, "PROCESSING", "paid", "svc", connection=session)
        assert row.status == "EXECUTING"
        session.close()
    finally:
        other.dispose()
    a.close()
