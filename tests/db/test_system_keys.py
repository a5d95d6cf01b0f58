"""Per-system control keys and their summary (the global key): written from every
system's value read under the summary lock, inserted, updated or deleted; both backends."""

from __future__ import annotations

from typing import Any

from conftest import Database
from unistatus.db.dialect import ops_for
from unistatus.db.mode_reads import read_value
from unistatus.db.system_keys import SYSTEMS, system_key, system_keys, systems_of, write_summary
from unistatus.domain.statuses import LegacySystemType as S


def test_the_keys_of_a_family() -> None:
    assert system_key("phase", S.ESCROW) == "phase.ESCROW"
    assert system_key("mode", "cashouts") == "mode.CASHOUT"  # type: ignore[arg-type]
    assert system_keys("mode", S.EXCHANGE) == ("mode", "mode.EXCHANGE")
    assert system_keys("mode") == ("mode", "mode.CASHOUT", "mode.ESCROW", "mode.EXCHANGE")
    assert systems_of(None) == SYSTEMS == tuple(S)
    assert systems_of(S.ESCROW) == (S.ESCROW,)


def test_the_summary_follows_what_it_reads_under_the_lock(db: Database) -> None:
    values: dict[S, Any] = dict.fromkeys(S, 2)
    ops = ops_for(db.engine)

    def write() -> str | None:
        with ops.write_transaction() as conn:
            write_summary(conn, "probe", lambda _conn: values, actor="test")
        with db.engine.connect() as conn:
            return read_value(conn, "probe")

    assert write() == "2"  # inserted
    values[S.CASHOUT] = values[S.ESCROW] = values[S.EXCHANGE] = 3
    assert write() == "3"  # updated in place
    values[S.ESCROW] = 4
    assert write() is None  # they differ: deleted
    assert write() is None  # and stays so
