"""What is a connection refused for a limit, and what only quotes its words.

A statement's error carries a SQLSTATE, and its DETAIL may quote the caller's own data:
a CHECK violation on a row whose text says "too many connections for role" is the
application refusing a write (said at once), never a full server (retried for up to the
write queue's time, a write slot held all along)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus.db.connection_limit import refused_for_a_limit

WORDS = ('too many connections for role "payments_rw"', "sorry, too many clients already")


@pytest.mark.parametrize("words", WORDS)
def test_a_statement_error_quoting_the_words_is_no_limit(pg: Database, words: str) -> None:
    with pg.engine.connect() as conn:
        conn.exec_driver_sql("CREATE TEMP TABLE notes (t text CHECK (t = 'ok'))")
        with pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text("INSERT INTO notes VALUES (:t)"), {"t": words})
        conn.rollback()
    assert words in str(caught.value.orig)  # its DETAIL quotes the row
    assert not refused_for_a_limit(caught.value)
    assert not refused_for_a_limit(str(caught.value))


def test_a_failed_connect_in_the_servers_words_is_a_limit() -> None:
    said = (
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        'FATAL:  too many connections for role "payments_rw"'
    )
    assert refused_for_a_limit(said)
    assert refused_for_a_limit(sa.exc.OperationalError("connect", {}, Exception(said)))
