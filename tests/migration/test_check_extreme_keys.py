"""Legacy keys at the ends of BIGINT (an application may hold them: an explicit id, a
sequence started at its minimum). The check places each inconsistent pair in a slice of
its range by its distance from the range's first key, in SQL: across the whole range
(-2^63 .. 2^63-1) that distance is past BIGINT ("bigint out of range" on PostgreSQL, a
REAL on SQLite that rounds a key into the next slice, and its example out of the window
read for it)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from support.check_data import insert_case, populate, tables
from unistatus.backfill.runner import run_backfill
from unistatus.domain.ids import SYSTEM_DIGIT
from unistatus.domain.mapping import FORWARD
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.check import run_check
from unistatus.migration.check_sql import SPOTS, _slice_of
from unistatus.migration.verify import verify_changes

LOWEST, HIGHEST = -(2**63), 2**63 - 1
N = 20


def _seed(db: Any, missing: tuple[int, ...], paired: tuple[int, ...] = ()) -> None:
    """``N`` consistent pairs per system, legacy rows without a unified row at
    ``missing``, and consistent pairs at ``paired``."""
    populate(db.engine, db.settings, N)
    with db.engine.begin() as conn:
        for lt in tables(db.engine, db.settings).values():
            legacy = next(iter(FORWARD[lt.system]))
            unified = {"status": FORWARD[lt.system][legacy].value}
            for key in missing:
                insert_case(conn, lt, key, {"status": legacy}, None)
            for i, key in enumerate(paired):
                # Its own id: the derived one of a key past 10^14 is too long for it.
                utx = f"UTX{SYSTEM_DIGIT[lt.system]}EXTREME{i}"
                insert_case(conn, lt, key, {"status": legacy}, {**unified, "id": utx})


def _assert_counts(report: Any, total: int, consistent: int) -> None:
    for system in LegacySystemType:
        figures = report.per_system[system.value]
        assert (figures["total"], figures["consistent"]) == (total, consistent), system
        assert figures["inconsistencies"]["missing_unified"] == total - consistent, system


@pytest.mark.parametrize("chunk", [3, 1000])
def test_check_counts_keys_across_the_whole_bigint_range(db: Any, chunk: int) -> None:
    keys = (LOWEST, LOWEST + 1, -1, 0, HIGHEST - 1, HIGHEST)
    _seed(db, keys)
    report = run_check(db.engine, db.settings, chunk=chunk, examples=100, store=False)
    _assert_counts(report, N + len(keys), N)
    for system in LegacySystemType:
        assert report.per_system[system.value]["complete"] is True
        listed = sorted(e["legacy_id"] for e in report.examples if e["system"] == system.value)
        assert listed == sorted(keys), system


def test_check_lists_the_example_of_a_range_spanning_every_key(db: Any) -> None:
    """One range from -2^63 to 2^63-1, in slices of 2^54 keys: 2^62 - 1 is the last key
    of slice 767 (its distance from the first key, 3 * 2^62 - 1, as a REAL rounds to
    3 * 2^62, the first of slice 768, which begins past it)."""
    key = 2**62 - 1
    _seed(db, (key,), (LOWEST, HIGHEST))
    report = run_check(db.engine, db.settings, chunk=1000, examples=1, store=False)
    _assert_counts(report, N + 3, N + 2)
    assert [(e["system"], e["legacy_id"]) for e in report.examples] == [("CASHOUT", key)]


def test_continuous_verification_reads_keys_across_the_whole_bigint_range(db: Any) -> None:
    keys = (LOWEST, -1, HIGHEST)
    _seed(db, keys)
    report = verify_changes(db.engine, db.settings, chunk=1000, max_seconds=None, store=False)
    _assert_counts(report, N + len(keys), N)


def test_backfill_then_check_with_the_lowest_key(db: Any) -> None:
    """The backfill chunks the keys from -2^63 on; the row there is set aside (a UTX id
    carries 1..10^14-1), the others copied; the check counts it as still missing."""
    _seed(db, (LOWEST, LOWEST + 1, 0))
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM unified_transactions")
    run_backfill(db.engine, db.settings, workers=1, batch_size=7)
    report = run_check(db.engine, db.settings, chunk=1000, examples=10, store=False)
    _assert_counts(report, N + 3, N)
    assert sorted({e["legacy_id"] for e in report.examples}) == [LOWEST, LOWEST + 1, 0]


def test_every_key_is_placed_in_its_slice(db: Any) -> None:
    """The slice the database works out for a key, as Python's exact integers do, in
    ranges across 0 wider than 2^63 - 1 (the split form) and narrower (the plain one)."""
    ranges = [(LOWEST, HIGHEST), (LOWEST + 12345, 2**62 + 7), (-(2**62), 2**62), (-5, 2**40)]
    cases = []
    for first, last in ranges:
        width = max(1, -(-(last - first + 1) // SPOTS))
        keys = {first, last, -1, 0, 1, first + width - 1, first + width, last - 1}
        keys |= {first + s * width + d for s in (511, 512, 767, 768) for d in (-1, 0)}
        for key in sorted(k for k in keys if first <= k <= last):
            cases.append((key, first, width, (key - first) // width))
    with db.engine.connect() as conn:
        got = [
            conn.execute(
                sa.select(_slice_of(sa.literal(key, sa.BigInteger), first, width))
            ).scalar_one()
            for key, first, width, _ in cases
        ]
    assert got == [want for *_, want in cases]
