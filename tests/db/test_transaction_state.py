"""savepoint_may_commit on every sqlite3 this package supports: Python 3.12 gave
``sqlite3.Connection`` an ``autocommit`` attribute (LEGACY_TRANSACTION_CONTROL, -1, by
default: the driver's own transaction handling, as before). The check took any
``autocommit`` for the new handling and never refused there."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from unistatus.db.transaction_state import savepoint_may_commit

LEGACY = -1  # sqlite3.LEGACY_TRANSACTION_CONTROL (Python 3.12+)


def connection(nested: bool, **driver: Any) -> Any:
    """What the check reads of a SQLAlchemy connection: nesting, and its driver's."""
    dbapi = SimpleNamespace(in_transaction=True, **driver)
    return SimpleNamespace(
        in_nested_transaction=lambda: nested,
        connection=SimpleNamespace(dbapi_connection=dbapi),
    )


@pytest.mark.parametrize(
    ("driver", "may_commit"),
    [
        ({"isolation_level": ""}, True),  # Python 3.11, pysqlite's own handling
        ({"isolation_level": "", "autocommit": LEGACY}, True),  # the same on 3.12+
        ({"isolation_level": None}, False),  # the recipe: BEGIN sent by SQLAlchemy
        ({"isolation_level": "", "autocommit": False}, False),  # 3.12+ PEP 249 handling
        ({"isolation_level": None, "autocommit": True}, False),
    ],
)
def test_a_savepoint_that_may_have_begun_the_transaction(
    driver: dict[str, Any], may_commit: bool
) -> None:
    assert savepoint_may_commit(connection(True, **driver)) is may_commit
    assert savepoint_may_commit(connection(False, **driver)) is False
