"""seed_legacy: counts, a realistic status mix, unmappable rows, determinism."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import LegacySystemType, UnifiedTransactionStatus
from unistatus.errors import InputError
from unistatus.sim.seed import CURRENCIES, id_ranges, seed_legacy, split_counts

FINAL = {s.value for s in UnifiedTransactionStatus if s.is_final}


def _statuses(db, system: LegacySystemType) -> Counter[str | None]:  # type: ignore[no-untyped-def]
    lt = resolve_legacy_tables(db.engine, db.settings)[system]
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(lt.status, sa.func.count()).group_by(lt.status)).all()
    return Counter({status: n for status, n in rows})


def test_split_counts_is_even_and_complete() -> None:
    systems = list(LegacySystemType)
    assert split_counts(10, systems) == dict(zip(systems, [4, 3, 3], strict=True))
    assert sum(split_counts(1_000_001, systems).values()) == 1_000_001
    with pytest.raises(ValueError):
        split_counts(-1, systems)


def test_counts_and_realistic_status_mix(db) -> None:  # type: ignore[no-untyped-def]
    counts = seed_legacy(db.engine, db.settings, 3000, seed=7)
    assert counts == {"CASHOUT": 1000, "ESCROW": 1000, "EXCHANGE": 1000}
    assert (db.count("cashouts"), db.count("escrows"), db.count("exchanges")) == (1000,) * 3
    mapper = LegacyStatusMapper()
    for system in LegacySystemType:
        mix = _statuses(db, system)
        # Every legacy value is present, and nothing unmappable was asked for.
        assert set(mix) == set(mapper.legacy_statuses(system))
        final = sum(n for s, n in mix.items() if mapper.to_unified(system, s).value in FINAL)
        assert 0.65 < final / 1000 < 0.95, f"{system}: {final} final rows"


def test_field_values_are_plausible(db) -> None:  # type: ignore[no-untyped-def]
    seed_legacy(db.engine, db.settings, 600)
    _assert_plausible(db)


# The ends of the documented range: every accepted seed gives rows the adapter accepts.
@pytest.mark.parametrize("seed", [0, 2**31 - 1])
def test_every_seed_of_the_range_gives_plausible_rows(db, seed: int) -> None:  # type: ignore[no-untyped-def]
    seed_legacy(db.engine, db.settings, 600, seed=seed)
    _assert_plausible(db)


@pytest.mark.parametrize("seed", [-1, -3, 2**31, 2_000_000_000_000_000, 10**20])
def test_a_seed_out_of_range_is_refused_and_writes_nothing(db, seed: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="seed"):
        seed_legacy(db.engine, db.settings, 30, seed=seed)
    assert db.count("cashouts") == 0


def _assert_plausible(db) -> None:  # type: ignore[no-untyped-def]
    tables = resolve_legacy_tables(db.engine, db.settings)
    now = utcnow()
    for system, lt in tables.items():
        with db.engine.connect() as conn:
            rows = conn.execute(sa.select(lt.table)).mappings().all()
        assert len(rows) == 200
        for row in rows:
            assert isinstance(row["amount"], Decimal)
            assert Decimal("1.00") <= row["amount"] <= Decimal("50000.99")
            assert row["amount"] == row["amount"].quantize(Decimal("0.01"))
            assert row["currency"] in CURRENCIES[system]
            assert 1 <= row["user_id"] <= 50_000
            created, updated = as_utc(row["created_at"]), as_utc(row["updated_at"])
            assert created is not None and updated is not None
            assert created <= updated <= now
        # Times are spread over months, not stamped at one instant.
        spread = max(as_utc(r["created_at"]) for r in rows) - min(  # type: ignore[type-var]
            as_utc(r["created_at"]) for r in rows
        )
        assert spread.days > 60


def test_unmappable_rows_when_asked(db) -> None:  # type: ignore[no-untyped-def]
    counts = seed_legacy(db.engine, db.settings, 300, unmappable=12)
    assert counts == {"CASHOUT": 104, "ESCROW": 104, "EXCHANGE": 104}
    mapper = LegacyStatusMapper()
    for system in LegacySystemType:
        mix = _statuses(db, system)
        bad = {s: n for s, n in mix.items() if mapper.try_to_unified(system, s) is None}
        assert sum(bad.values()) == 4
        assert None in bad  # a NULL status
        assert any(s and s != s.upper() for s in bad)  # lower case


def test_same_seed_same_rows_and_ids_continue(db) -> None:  # type: ignore[no-untyped-def]
    seed_legacy(db.engine, db.settings, 60, seed=3)
    first = id_ranges(db.engine, db.settings)
    seed_legacy(db.engine, db.settings, 60, seed=3)
    second = id_ranges(db.engine, db.settings)
    lt = resolve_legacy_tables(db.engine, db.settings)[LegacySystemType.ESCROW]
    assert first[LegacySystemType.ESCROW] == (1, 20)
    assert second[LegacySystemType.ESCROW] == (1, 40)
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(lt.status, lt.amount, lt.user_id, lt.currency).order_by(lt.id)
        ).all()
    assert rows[:20] == rows[20:]


def test_systems_subset(db) -> None:  # type: ignore[no-untyped-def]
    counts = seed_legacy(db.engine, db.settings, 50, systems=["escrow"])
    assert counts == {"ESCROW": 50}
    assert (db.count("cashouts"), db.count("escrows"), db.count("exchanges")) == (0, 50, 0)


def test_bad_input_writes_nothing(db) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        seed_legacy(db.engine, db.settings, -5)
    with pytest.raises(Exception, match="unknown legacy system"):
        seed_legacy(db.engine, db.settings, 5, systems=["payroll"])
    assert db.count("cashouts") == 0


def test_hundred_thousand_rows(db) -> None:  # type: ignore[no-untyped-def]
    """Set-based: 100k rows must be quick on both backends (1M on PG takes ~5 s)."""
    counts = seed_legacy(db.engine, db.settings, 100_000, unmappable=30)
    assert sum(counts.values()) == 100_030
    assert db.count("exchanges") == 33_343


@pytest.mark.postgres
def test_a_second_seed_waits_for_the_first_whatever_its_lock_timeout(pg) -> None:  # type: ignore[no-untyped-def]
    """`init --demo-data` twice at once seeds once: the second waits for the first's
    tables. On a command's connections (bounded by lock_timeout_ms) it gave up instead
    while the first inserted (found by review)."""
    import threading
    import time

    from unistatus.db.engine import create_engine

    bounded = create_engine(pg.url, lock_timeout_ms=200)
    box: dict[str, object] = {}
    try:
        with pg.engine.connect() as first:  # the first seed, still inserting
            first.begin()
            first.exec_driver_sql("LOCK TABLE cashouts IN SHARE ROW EXCLUSIVE MODE")
            first.exec_driver_sql(
                "INSERT INTO cashouts (user_id, amount, currency, status, created_at, "
                "updated_at) VALUES (1, 5, 'USD', 'PENDING', now(), now())"
            )
            second = threading.Thread(
                target=lambda: box.update(
                    seeded=seed_legacy(bounded, pg.settings, 30, only_into_empty=True)
                )
            )
            second.start()
            time.sleep(1.0)  # five of its lock timeouts
            first.commit()
        second.join(30)
    finally:
        bounded.dispose()
    assert box.get("seeded") == {}, box  # it waited, then saw the first's rows
    assert pg.count("cashouts") == 1


@pytest.mark.postgres
def test_a_seed_of_a_database_with_rows_takes_no_lock_behind_its_writers(pg) -> None:  # type: ignore[no-untyped-def]
    """`init --demo-data` again on a database in use: it sees the rows without locking
    the tables (a SHARE ROW EXCLUSIVE lock queued behind a writer's open transaction, and
    every other writer behind it, for as long as that transaction stayed open)."""
    import time

    from unistatus.db.engine import create_engine

    seed_legacy(pg.engine, pg.settings, 3)
    bounded = create_engine(pg.url, lock_timeout_ms=200)
    try:
        with pg.engine.connect() as writer:  # an application's transaction, left open
            writer.begin()
            writer.exec_driver_sql("UPDATE cashouts SET updated_at = now()")
            began = time.monotonic()
            seeded = seed_legacy(bounded, pg.settings, 30, only_into_empty=True)
            took = time.monotonic() - began
            writer.rollback()
    finally:
        bounded.dispose()
    assert seeded == {} and took < 2, (seeded, took)
