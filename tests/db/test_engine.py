"""unistatus's own engines (db/engine.py), against real databases.

On SQLite unistatus takes pysqlite's transaction handling over (BEGIN IMMEDIATE). A
COMMIT that SQLite refuses (a deferred foreign key) leaves its transaction open, where
SQLAlchemy assumes it ended: returned to the pool that way, the connection would fail
its next user ("cannot start a transaction within a transaction") and hold the write
lock meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from unistatus.db.engine import create_engine

APP = sa.MetaData()
PARENT = sa.Table("parent", APP, sa.Column("id", sa.Integer, primary_key=True))
CHILD = sa.Table(
    "child",
    APP,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "parent_id", sa.Integer, sa.ForeignKey("parent.id", deferrable=True, initially="DEFERRED")
    ),
)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    APP.create_all(engine)
    yield engine
    engine.dispose()


def test_a_session_commit_sqlite_refuses_leaves_no_transaction_in_the_pool(
    sqlite_engine: sa.Engine,
) -> None:
    with pytest.raises(sa.exc.IntegrityError, match="FOREIGN KEY"), Session(sqlite_engine) as s:
        s.execute(sa.insert(CHILD).values(id=1, parent_id=999))  # checked at COMMIT
        s.commit()
    with sqlite_engine.connect() as conn:
        assert not conn.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
        assert conn.execute(sa.select(sa.func.count()).select_from(CHILD)).scalar_one() == 0
    with sqlite_engine.begin() as conn:  # the next writer is not refused
        conn.execute(sa.insert(PARENT).values(id=1))
        conn.execute(sa.insert(CHILD).values(id=1, parent_id=1))
    with sqlite_engine.connect() as conn:
        assert conn.execute(sa.select(CHILD.c.parent_id)).scalars().all() == [1]
