"""A legacy amount kept as TEXT is judged by one rule, in SQL (the backfill, the
capture) and in Python (the adapter, repair, on the row as they read it): on
PostgreSQL, SQL read 'NaN' as amount_nan and ' -Infinity' as negative_amount (the cast
to numeric takes them) and failed on 'abc' (the cast refused it), where the Python rule
calls text that is no plain decimal amount_out_of_range (a review)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus.backfill.statements import legacy_data
from unistatus.db.legacy import DATA_COLUMNS, resolve_legacy_tables
from unistatus.domain.copyable import AMOUNT_OUT_OF_RANGE, uncopyable, uncopyable_clauses
from unistatus.domain.statuses import LegacySystemType

AMOUNTS = ["NaN", " -Infinity", "Infinity", "1e3", " 12.5 ", "abc", "5"]


@pytest.fixture(params=["sqlite", "postgres"])
def text_amounts(request: pytest.FixtureRequest) -> Database:
    fixture = "sqlite_db" if request.param == "sqlite" else "scratch_pg"
    db: Database = request.getfixturevalue(fixture)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE cashouts")
        conn.exec_driver_sql(
            "CREATE TABLE cashouts (id BIGINT PRIMARY KEY, status VARCHAR(64), "
            "user_id BIGINT, amount TEXT, currency VARCHAR(16), created_at TIMESTAMP, "
            "updated_at TIMESTAMP)"
        )
        for i, amount in enumerate(AMOUNTS, start=1):
            conn.execute(
                sa.text(
                    "INSERT INTO cashouts VALUES (:i, 'PENDING', 1, :a, 'USD', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"i": i, "a": amount},
            )
    return db


def test_sql_and_python_give_a_text_amount_the_same_reason(text_amounts: Database) -> None:
    db = text_amounts
    lt = resolve_legacy_tables(db.engine, db.settings)[LegacySystemType.CASHOUT]
    data = legacy_data(lt)
    judged = sa.case(*uncopyable_clauses(data), else_=sa.null())
    with db.engine.connect() as conn:
        # The rows as the adapter and repair read them (LegacyTable.read: the amount
        # through ExactAmount), and the SQL judge the backfill and the capture use.
        read = conn.execute(
            sa.select(
                lt.id, judged.label("sql"), *(data[n].label(n) for n in DATA_COLUMNS)
            ).order_by(lt.id)
        ).all()
    sql = {r.id: r.sql for r in read}
    python = {r.id: uncopyable({n: getattr(r, n) for n in DATA_COLUMNS}) for r in read}
    assert sql == python
    assert [python[i] for i in range(1, 7)] == [AMOUNT_OUT_OF_RANGE] * 4 + [
        None,
        AMOUNT_OUT_OF_RANGE,
    ]
    assert python[7] is None
