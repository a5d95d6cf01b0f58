"""Legacy ids beyond what a UTX id holds (14 digits: ``UTX`` + system digit + id).

A legacy table whose ids go past 99,999,999,999,999 (a sequence restarted high, ids
made elsewhere) cannot be migrated under UTX ids: a derived id would be malformed, or in
SQL run into the next system's ids (cashout 10^14 + 5 is ``UTX200000000000005``, the id of
escrow 5). Each path refuses before anything is written, naming the table and the limit:
the adapter's create (the create committed, then raised); the backfill sets such a row
aside in its quarantine and copies the rest.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in, snapshot
from support.legacy_rows import insert_cashout
from unistatus import DualWriteMode
from unistatus.backfill.runner import run_backfill
from unistatus.domain.ids import MAX_LEGACY_ID
from unistatus.errors import ConfigError

M = DualWriteMode
WRITES_LEGACY = [M.LEGACY_ONLY, M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY]


def next_cashout_id_beyond_range(db: Database) -> None:
    """The cashouts table hands out 10^14 + 1 next: in SQL, escrow 1's UTX id."""
    if db.backend == "sqlite":
        insert_cashout(db.engine, MAX_LEGACY_ID + 1)
        return
    with db.engine.begin() as conn:
        conn.execute(
            sa.text("SELECT setval(pg_get_serial_sequence('cashouts', 'id'), :i)"),
            {"i": MAX_LEGACY_ID + 1},
        )


@pytest.mark.parametrize("mode", WRITES_LEGACY, ids=lambda m: m.value)
def test_a_create_given_an_id_beyond_the_utx_range_writes_nothing(
    db: Database, mode: DualWriteMode
) -> None:
    a = adapter_in(db, mode, record_stats=False)
    a.create_transaction("ESCROW", 1, "5", "USD")  # escrow 1: what cashout 10^14 + 1 hits
    next_cashout_id_beyond_range(db)
    before = snapshot(db)
    with pytest.raises(ConfigError, match=r"cashouts.*100000000000001.*14 digits"):
        a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    assert snapshot(db) == before


def test_the_backfill_sets_aside_legacy_ids_beyond_the_utx_range_and_copies_the_rest(
    db: Database,
) -> None:
    """One such row (a sentinel id 2^63-1) refused the whole backfill, nothing copied
    (a probe), where a bypass write of it is quarantined: it is quarantined here too,
    and the gate into phase 3 waits for it like any other."""
    from unistatus.backfill.statements import BEYOND_UTX_RANGE
    from unistatus.db.tables_backfill import backfill_quarantine as Q

    a = adapter_in(db, M.LEGACY_ONLY, record_stats=False)
    a.create_transaction("ESCROW", 4, "5", "USD")  # escrow 4: what cashout 10^14 + 4 hits
    a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    insert_cashout(db.engine, MAX_LEGACY_ID + 5)
    insert_cashout(db.engine, 2**63 - 1)
    run_backfill(db.engine, db.settings)
    with db.engine.connect() as conn:
        unified = conn.execute(
            sa.text("SELECT legacy_system, legacy_id FROM unified_transactions")
        ).all()
        quarantined = conn.execute(sa.select(Q.c.system, Q.c.legacy_id, Q.c.reason)).all()
    assert sorted(tuple(r) for r in unified) == [("CASHOUT", 1), ("ESCROW", 1)]
    assert sorted(tuple(r) for r in quarantined) == [
        ("CASHOUT", MAX_LEGACY_ID + 5, BEYOND_UTX_RANGE),
        ("CASHOUT", 2**63 - 1, BEYOND_UTX_RANGE),
    ]


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "idempotency-key"])
@pytest.mark.parametrize("mode", WRITES_LEGACY, ids=lambda m: m.value)
def test_in_the_callers_transaction_the_refused_create_leaves_nothing_behind(
    db: Database, mode: DualWriteMode, keyed: bool
) -> None:
    """The caller catches the refusal and commits the rest of its work: nothing of the
    create may be in it (the one-statement create had written its rows, and a unified
    row under a placeholder id, before the id was judged), and a second such create is
    refused the same way."""
    a = adapter_in(db, mode, record_stats=False)
    a.create_transaction("ESCROW", 1, "5", "USD")
    next_cashout_id_beyond_range(db)
    before = snapshot(db)
    with db.app_engine.connect() as conn, conn.begin():
        for attempt in ("k1", "k2"):
            with pytest.raises(ConfigError, match=r"14 digits"):
                a.create_transaction(
                    "WALLET_CASHOUT",
                    1,
                    "5",
                    "USD",
                    connection=conn,
                    idempotency_key=attempt if keyed else None,
                )
    assert snapshot(db) == before
