"""Ctrl-C in a statement run on the driver's cursor (:class:`Prepared`): the interrupt
comes out as itself, the connection psycopg may leave mid-command is dropped."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import sqlalchemy as sa

from unistatus.db.failures import interrupt_behind
from unistatus.db.prepared import Prepared


@pytest.mark.postgres
def test_ctrl_c_after_a_prepared_statement_was_sent_is_the_interrupt(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT right after psycopg sent the statement, before it read the result: the
    rollback on the way out ran on the connection left mid-command, and "another command
    is already in progress" took the interrupt's place (`repair` counted it as an
    entity's failure and went on). Now the KeyboardInterrupt, the connection invalidated."""
    from psycopg._cursor_base import BaseCursor  # noqa: PLC0415

    send = BaseCursor._execute_send

    def sent_then_interrupted(self: Any, query: Any, *args: Any, **kwargs: Any) -> None:
        send(self, query, *args, **kwargs)
        if b"pg_sleep" in bytes(query.query):
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(BaseCursor, "_execute_send", sent_then_interrupted)
    statement = Prepared(sa.select(sa.func.pg_sleep(0.2)), pg.engine)
    with pg.engine.connect() as conn:
        with pytest.raises(KeyboardInterrupt), conn.begin():
            statement.rows(conn, {})
        assert conn.invalidated
    with pg.engine.connect() as conn:  # the pool hands out a working connection
        assert conn.execute(sa.select(sa.literal(1))).scalar_one() == 1


def test_interrupt_behind_finds_the_interrupt_a_cleanup_replaced() -> None:
    """A failure raised while handling a KeyboardInterrupt (a rollback on the way out)
    is that interruption; any other failure is its own."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise sa.exc.OperationalError("ROLLBACK", {}, RuntimeError("busy")) from None
    except sa.exc.OperationalError as replaced:
        # `from None` hides the context from a traceback, not from the chain.
        assert isinstance(interrupt_behind(replaced), KeyboardInterrupt)
    assert interrupt_behind(sa.exc.OperationalError("SELECT 1", {}, RuntimeError("x"))) is None
