"""An application whose engine uses another PostgreSQL driver than the adapter's.

unistatus's own engines use psycopg 3; many applications still run on psycopg2 (what
SQLAlchemy picks for a plain ``postgresql://`` URL). Their connection, passed as
``connection=``, must work the same: the adapter's statements prepared for psycopg 3
(its JSON wrapped in psycopg's ``Jsonb``, run straight on its cursor) were sent as they
were ("can't adapt type 'Jsonb'" in both dual-write modes), and a transaction the
caller's own statement had failed was not recognised (psycopg2 reports its state as a
number).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from conftest import PG_IN_EVERY_LAYOUT, Database
from support.adapters import adapter_in
from unistatus import CallerTransactionError, DualWriteMode

M = DualWriteMode


@pytest.fixture
def psycopg2_engine(pg: Database) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg.url.replace("+psycopg:", "+psycopg2:"))
    assert engine.dialect.driver == "psycopg2"
    yield engine
    engine.dispose()


def statuses(pg: Database) -> list[tuple[str, str]]:
    with pg.engine.connect() as conn:
        q = f"SELECT id, status FROM {pg.table('unified_transactions')} ORDER BY id"
        return [(str(i), str(s)) for i, s in conn.execute(sa.text(q))]


@PG_IN_EVERY_LAYOUT
@pytest.mark.parametrize("mode", list(M), ids=lambda m: m.value)
def test_an_application_on_psycopg2_writes_in_its_own_transaction(
    pg: Database, psycopg2_engine: sa.Engine, mode: DualWriteMode
) -> None:
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    entity_id = str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)
    a = adapter_in(pg, mode, record_stats=False)
    before = statuses(pg)
    for keep in (False, True):
        with psycopg2_engine.connect() as conn, conn.begin() as tx:
            changed = a.update_status(
                entity_id, "PROCESSING", "sent", "svc", metadata={"k": [1]}, connection=conn
            )
            made = a.create_transaction("WALLET_CASHOUT", 2, "7", "EUR", connection=conn)
            assert changed.overall_success and made.overall_success, (changed, made)
            status, _ = a.get_transaction_status(entity_id, connection=conn)
            assert status is not None and status.value == "PROCESSING"
            (tx.commit if keep else tx.rollback)()
        if not keep:
            assert statuses(pg) == before
    after = statuses(pg)
    if mode.writes_unified:
        assert (entity_id, "PROCESSING") in after and len(after) == len(before) + 1
    if mode.writes_unified and mode.writes_legacy:
        with psycopg2_engine.connect() as conn, conn.begin():
            assert a.check_consistency(entity_id, connection=conn)["consistent"]


def test_a_psycopg2_transaction_the_caller_failed_is_refused(
    pg: Database, psycopg2_engine: sa.Engine
) -> None:
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    entity_id = str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)
    with psycopg2_engine.connect() as conn:
        conn.begin()
        with pytest.raises(sa.exc.DBAPIError):
            conn.exec_driver_sql("SELECT 1/0")
        with pytest.raises(CallerTransactionError, match="already failed"):
            a.update_status(entity_id, "PROCESSING", "r", "svc", connection=conn)
        conn.rollback()
