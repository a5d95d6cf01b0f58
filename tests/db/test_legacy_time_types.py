"""A legacy time column of a type that cannot hold a time is refused at start.

DDL shared between PostgreSQL and SQLite declares ``created_at timestamptz``; SQLite
gives that column NUMERIC affinity and SQLAlchemy reflects it as NUMERIC, so every
create failed with ``TypeError: float() argument must be ... not 'datetime.datetime'``,
counted as a database failure (exploratory review). README: a column type unistatus
cannot work with is refused at start with an error that names it.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.refusals import assert_refused_at_start
from unistatus.adapter.core import DualWriteAdapter
from unistatus.errors import ConfigError

COLUMNS = "id INTEGER PRIMARY KEY, user_id BIGINT, amount NUMERIC(20, 8), currency VARCHAR(10)"


def test_a_time_column_sqlite_reads_as_numeric_is_refused_at_start(sqlite_db: Any) -> None:
    db = sqlite_db
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE cashouts")
        conn.exec_driver_sql(
            f"CREATE TABLE cashouts ({COLUMNS}, status VARCHAR(64), "
            "created_at timestamptz, updated_at timestamptz)"
        )
    message = r"legacy table 'cashouts': its created_at column 'created_at' is of type NUMERIC"
    assert_refused_at_start(db, message)
    with pytest.raises(ConfigError, match="DATETIME"):
        DualWriteAdapter(db.engine, settings=db.settings)
