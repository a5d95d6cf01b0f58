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


SECRET = "card 4111-1111-1111-1111"


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        # psycopg2 writes the values into the SQL it sends: the server's LINE excerpt
        # quotes them.
        pytest.param("psycopg2", marks=pytest.mark.postgres),
    ],
)
def test_a_failed_statement_never_quotes_its_parameters(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """What a statement was given (a caller's user, amount, metadata) stays out of the
    errors unistatus's engines raise, hence out of every log and message made from them
    (a 503's log line, a result's ``error``); so does ``describe``, on a caller's own
    engine that does not hide them."""
    from unistatus.db.failures import describe

    url = f"sqlite:///{tmp_path / 'p.db'}"
    if backend != "sqlite":
        url = request.getfixturevalue("postgres_url")
    if backend == "psycopg2":
        url = url.replace("+psycopg:", "+psycopg2:")
    engine = create_engine(url)
    theirs = sa.create_engine(url)
    # A bind processor refusing the value (a StatementError) and the server refusing
    # the statement (a DBAPIError), each given the secret.
    when = sa.select(sa.bindparam("at", type_=sa.DateTime)).where(
        sa.bindparam("note", type_=sa.String) != ""
    )
    wrong = sa.text("SELECT no_such_column FROM (SELECT :note AS x) AS t")
    try:
        cases = [(when, {"at": "not a time", "note": SECRET}), (wrong, {"note": SECRET})]
        for statement, values in cases[1:] if backend == "psycopg2" else cases:
            for eng in (engine, theirs):
                with eng.connect() as conn, pytest.raises(sa.exc.StatementError) as raised:
                    conn.execute(statement, values)
                if eng is engine and backend != "psycopg2":  # the server's words: below
                    assert SECRET not in str(raised.value), str(raised.value)
                assert SECRET not in describe(raised.value), describe(raised.value)
    finally:
        engine.dispose()
        theirs.dispose()


def test_describe_quotes_no_parameters_of_an_error_without_a_driver_error() -> None:
    """An error SQLAlchemy raised without the driver's (``orig`` None), or wrapping
    another of its own, is told by its message alone."""
    from unistatus.db.failures import describe

    bare = sa.exc.DBAPIError("SELECT :a", {"a": SECRET}, None)  # type: ignore[arg-type]
    nested = sa.exc.StatementError("refused", "SELECT :b", {"b": SECRET}, bare)
    for exc in (bare, nested):
        assert SECRET not in describe(exc) and "[SQL" not in describe(exc), describe(exc)
