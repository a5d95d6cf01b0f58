"""`unistatus check`: exact counts per kind, streaming by chunks, stored reports, the CLI.

Runs on SQLite and PostgreSQL (the ``db`` fixture). Data comes from set-based INSERTs
(``test_check_data``) with known damage, so every expected number is known exactly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import IN_EVERY_LAYOUT
from support.check_data import SWAP, T1, damage, insert_case, populate, tables
from unistatus.cli import app
from unistatus.db import schema
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import ConfigError, InputError
from unistatus.migration.check import (
    FULL_SCOPE,
    KINDS,
    latest_report,
    pair_flags,
    parse_since,
    run_check,
)

N = 60


def expected(n: int) -> dict[str, Any]:
    ids = range(1, n + 1)
    kinds = {
        "missing_unified": {i for i in ids if i % 10 == 1},
        "orphan_unified": {i for i in ids if i % 10 == 5},
        "status_mismatch": {i for i in ids if i % 10 == 2},
        "field_mismatch": {i for i in ids if i % 10 in (2, 3)},
        "unmappable_legacy": {i for i in ids if i % 10 == 4},
        "legacy_status_drift": set(),  # the damage keeps every legacy_status exact
        "missing_legacy": set(),  # no unified row without its legacy row
    }
    bad = set().union(*kinds.values())
    return {
        "total": n,
        "consistent": n - len(bad),
        "inconsistencies": {k: len(v) for k, v in kinds.items()},
    }


@pytest.mark.parametrize("chunk", [7, 10, 1000])
def test_counts_every_kind_exactly_at_any_chunk_size(db: Any, chunk: int) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    report = run_check(db.engine, db.settings, chunk=chunk, examples=0)
    one = expected(N)
    assert report.total == 3 * one["total"]
    assert report.consistent == 3 * one["consistent"]
    assert report.inconsistencies == {k: 3 * v for k, v in one["inconsistencies"].items()}
    for system in LegacySystemType:
        assert {k: report.per_system[system.value][k] for k in one} == one
        assert report.per_system[system.value]["complete"] is True
    assert report.consistency_rate == pytest.approx(one["consistent"] / one["total"])
    assert not report.is_consistent


@IN_EVERY_LAYOUT
def test_a_consistent_copy_is_fully_consistent(db: Any) -> None:
    populate(db.engine, db.settings, 40)
    report = run_check(db.engine, db.settings, chunk=9)
    assert (report.total, report.consistent, report.consistency_rate) == (120, 120, 1.0)
    assert set(report.inconsistencies.values()) == {0}
    assert report.examples == []


def test_empty_tables_are_consistent(db: Any) -> None:
    report = run_check(db.engine, db.settings)
    assert (report.total, report.consistent, report.consistency_rate) == (0, 0, 1.0)


@IN_EVERY_LAYOUT
def test_orphans_outside_the_legacy_key_range_and_born_unified_rows(db: Any) -> None:
    """The first chunk is open below and the last above; legacy_id NULL is no orphan."""
    populate(db.engine, db.settings, 20)
    lt = tables(db.engine, db.settings)[LegacySystemType.ESCROW]
    with db.engine.begin() as conn:
        insert_case(conn, lt, 10_000, None, {"status": "PENDING"})  # beyond the last key
        conn.execute(sa.delete(lt.table).where(lt.id <= 3))  # below the first key now
        insert_case(conn, lt, 0, None, {"status": "PENDING"}, born_unified_id="UTX900000000000042")
    for chunk in (4, 5, 100):
        report = run_check(db.engine, db.settings, chunk=chunk, store=False)
        assert report.inconsistencies["orphan_unified"] == 4, chunk
        assert report.total == 60 + 1, chunk  # 57 legacy rows + 4 orphans
        assert report.consistent == 57


def test_examples_carry_both_sides_and_are_bounded(db: Any) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    report = run_check(db.engine, db.settings, examples=4, chunk=7)
    assert len(report.examples) == 4
    assert {e["system"] for e in report.examples} == {"CASHOUT"}
    report = run_check(db.engine, db.settings, examples=5, chunk=7)
    assert [e["legacy_id"] for e in report.examples] == [1, 2, 3, 4, 5]  # the first chunk
    first = report.examples[0]
    assert first["kinds"] == ["missing_unified"] and first["transaction_id"] is None
    both = next(e for e in report.examples if e["legacy_id"] == 2)
    assert both["kinds"] == ["status_mismatch", "field_mismatch"]
    fields = {d["field"]: d for d in both["details"]}
    assert fields["user_id"]["unified_value"] == fields["user_id"]["legacy_value"] + 1
    assert fields["status"]["unified_value"] in SWAP[LegacySystemType.CASHOUT]
    amount = next(e for e in report.examples if e["legacy_id"] == 3)["details"][0]
    assert Decimal(amount["unified_value"]) - Decimal(amount["legacy_value"]) == Decimal("1e-8")
    assert run_check(db.engine, db.settings, examples=0).examples == []


def test_since_limits_to_rows_updated_on_either_side(db: Any) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)  # unified rows of ids %10 in (2, 3) updated at T1
    lt = tables(db.engine, db.settings)[LegacySystemType.CASHOUT]
    with db.engine.begin() as conn:  # and one legacy row, left consistent
        conn.execute(sa.update(lt.table).where(lt.id == 7).values({lt.updated_at.key: T1}))
    report = run_check(db.engine, db.settings, since=T1 - timedelta(days=1), store=False)
    per = 2 * N // 10
    assert report.total == 3 * per + 1
    assert report.inconsistencies["status_mismatch"] == 3 * (N // 10)
    assert report.inconsistencies["field_mismatch"] == 3 * per
    assert report.inconsistencies["missing_unified"] == 0
    assert report.scope.startswith("since=")
    assert run_check(db.engine, db.settings, since=T1 + timedelta(days=1)).total == 0


def test_since_keeps_the_pairs_with_one_side_absent(db: Any) -> None:
    """A legacy row without its unified row, and an orphan unified row, are in a
    ``since`` scope when their one side was updated since (the changed keys are found
    on each side before the join)."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)  # ids %10 == 1: unified gone; == 5: legacy gone
    lt = tables(db.engine, db.settings)[LegacySystemType.CASHOUT]
    with db.engine.begin() as conn:
        conn.execute(sa.update(lt.table).where(lt.id == 11).values({lt.updated_at.key: T1}))
        conn.execute(
            sa.update(U)
            .where(U.c.legacy_system == "CASHOUT", U.c.legacy_id == 15)
            .values(updated_at=T1)
        )
    since = T1 - timedelta(days=1)
    report = run_check(db.engine, db.settings, since=since, store=False, chunk=7)
    per = 2 * N // 10  # the unified rows damage() updated at T1, per system
    assert report.total == 3 * per + 2
    assert report.inconsistencies["missing_unified"] == 1
    assert report.inconsistencies["orphan_unified"] == 1


def test_system_filter(db: Any) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    report = run_check(db.engine, db.settings, systems=["escrow"], examples=50)
    assert report.systems == ["ESCROW"] and report.scope == "ESCROW"
    assert report.total == N and list(report.per_system) == ["ESCROW"]
    assert {e["system"] for e in report.examples} == {"ESCROW"}
    assert run_check(db.engine, db.settings, systems="all").scope == FULL_SCOPE


def test_reports_are_stored_and_latest_report_reads_them(db: Any) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    full = run_check(db.engine, db.settings, examples=3)
    partial = run_check(db.engine, db.settings, systems=["cashout"])
    run_check(db.engine, db.settings, store=False)
    assert db.count("unistatus_check_reports") == 2
    latest = latest_report(db.engine)
    assert latest is not None and latest.id == partial.id and latest.scope == "CASHOUT"
    stored = latest_report(db.engine, scope=FULL_SCOPE)
    assert stored is not None
    assert stored.as_dict()["inconsistencies"] == full.inconsistencies
    assert (stored.total, stored.consistent) == (full.total, full.consistent)
    assert stored.consistency_rate == pytest.approx(full.consistency_rate)
    assert stored.examples == json.loads(json.dumps(full.examples))
    assert stored.created_at.tzinfo is not None
    assert latest_report(db.engine, scope="EXCHANGE") is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"examples": -1},
        {"since": "yesterday"},
        {"systems": ["payouts"]},
        {"chunk": 0},
    ],
)
def test_bad_input_is_a_typed_error_and_stores_nothing(db: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        run_check(db.engine, db.settings, **kwargs)
    assert db.count("unistatus_check_reports") == 0


def test_parse_since() -> None:
    now = T1
    assert parse_since("90m", now=now) == now - timedelta(minutes=90)
    assert parse_since("2d", now=now) == now - timedelta(days=2)
    assert parse_since("2026-01-31T12:00:00Z") == parse_since("2026-01-31T12:00:00+00:00")
    assert parse_since("2026-01-31T12:00:00").tzinfo is not None  # type: ignore[union-attr]
    assert parse_since(None) is None
    with pytest.raises(InputError):
        parse_since("1 fortnight")
    # A time to come: "0 of 0 consistent (100%)" said nothing was wrong.
    with pytest.raises(InputError, match="in the future"):
        parse_since("2099-01-01T00:00:00Z", now=now)
    assert parse_since("2026-01-31T12:00:30Z", now=parse_since("2026-01-31T12:00:00Z"))


def test_the_check_is_one_statement_per_chunk(db: Any) -> None:
    """Set-based: the rule is SQL; the range bounds both halves so indexes serve it."""
    lt = tables(db.engine, db.settings)[LegacySystemType.CASHOUT]
    pairs = pair_flags(lt, 10, 20)
    sql = str(
        sa.select(sa.func.count())
        .select_from(pairs.source)
        .compile(db.engine, compile_kwargs={"literal_binds": True})
    )
    assert "LEFT OUTER JOIN" in sql and "UNION ALL" in sql and "NOT (EXISTS" in sql
    # unified side, legacy side of its join, legacy rows alone, and their anti-join on
    # the unified reference: an unbounded anti-join hashed every key of the other table
    # for every chunk (quadratic overall).
    assert sql.count("> 10") == 4 and sql.count("<= 20") == 4
    anti = "legacy_id = cashouts.id AND unified_transactions.legacy_id > 10"
    assert anti + " AND unified_transactions.legacy_id <= 20)" in sql
    assert set(pairs.rule.flags) == set(KINDS)


def test_a_missing_legacy_table_is_a_config_error(db: Any) -> None:
    settings = db.settings.model_copy(deep=True)
    settings.legacy_tables["ESCROW"].table = "no_such_table"
    with pytest.raises(ConfigError):
        run_check(db.engine, settings)
    assert db.count("unistatus_check_reports") == 0


# --- the CLI --------------------------------------------------------------------------


def _cli(db: Any, *args: str) -> Any:
    return CliRunner().invoke(app, ["--database-url", db.url, *args], catch_exceptions=False)


def test_cli_json_shape_and_exit_codes(db: Any) -> None:
    populate(db.engine, db.settings, 30)
    ok = _cli(db, "check", "--json")
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.output)
    assert {"total", "consistent", "consistency_rate", "inconsistencies", "examples"} <= set(data)
    assert (data["total"], data["consistent"], data["consistency_rate"]) == (90, 90, 1.0)
    assert set(data["inconsistencies"]) == set(KINDS)

    damage(db.engine, db.settings, 30)
    bad = _cli(db, "check", "--json", "--system", "exchange", "--examples", "2")
    assert bad.exit_code == 1, bad.output
    data = json.loads(bad.output)
    assert data["total"] == 30 and data["consistent"] == expected(30)["consistent"]
    assert data["inconsistencies"] == expected(30)["inconsistencies"]
    assert len(data["examples"]) == 2 and data["examples"][0]["system"] == "EXCHANGE"

    human = _cli(db, "check", "--since", "1000d")
    assert human.exit_code == 1
    assert "missing_unified" in human.output and "consistent" in human.output

    wrong = _cli(db, "check", "--since", "soon")
    assert wrong.exit_code == 2 and "--since" in wrong.output
    assert db.count("unistatus_check_reports") == 3


# --- the migration --------------------------------------------------------------------


def test_migration_creates_and_drops_the_reports_table(sqlite_db: Any) -> None:
    engine, settings = sqlite_db.engine, sqlite_db.settings
    assert "unistatus_check_reports" in sa.inspect(engine).get_table_names()
    schema.downgrade(engine, settings, "0002")
    assert "unistatus_check_reports" not in sa.inspect(engine).get_table_names()
    schema.upgrade(engine, settings)
    assert "unistatus_check_reports" in sa.inspect(engine).get_table_names()
    run_check(engine, settings)
    assert latest_report(engine) is not None


def test_memory_does_not_grow_with_the_table(sqlite_db: Any) -> None:
    """Only one row of counts per chunk reaches Python, and the inconsistent pairs of
    one chunk while they are re-checked: the Python-side peak does not grow with the
    number of rows checked (8x the rows, about the same peak)."""
    import tracemalloc

    engine, settings = sqlite_db.engine, sqlite_db.settings
    populate(engine, settings, 2_000)
    double = sa.text(  # legacy rows without unified rows: all missing_unified
        "INSERT INTO cashouts SELECT (SELECT max(id) FROM cashouts) + id, user_id, amount,"
        " currency, status, created_at, updated_at FROM cashouts"
    )
    with engine.begin() as conn:
        conn.execute(double)
    run_check(engine, settings, chunk=500, store=False)  # warm caches (compiled SQL)

    def peak() -> int:
        tracemalloc.start()
        run_check(engine, settings, chunk=500, store=False)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small = peak()
    with engine.begin() as conn:
        for _ in range(3):
            conn.execute(double)
    assert sqlite_db.count("cashouts") == 32_000
    large = peak()
    # Re-checked rows of a chunk are freed by the cyclic collector at its own pace, so
    # the peak wobbles by a few chunks' worth; 8x the rows must not make it 8x.
    assert large < 2.5 * small + 256 * 1024, (small, large)


def test_since_finds_a_row_an_application_stamped_with_an_offset(sqlite_db: Any) -> None:
    """Python's sqlite3 stores an aware time with its offset ('... 14:01:42-05:00'): as
    text it sorts before the UTC ``since``; compared as the time it is, it is after."""
    db = sqlite_db
    populate(db.engine, db.settings, N)
    assert run_check(db.engine, db.settings).is_consistent
    since = datetime.now(UTC) - timedelta(minutes=5)
    new_york = str(datetime.now(ZoneInfo("America/New_York")))
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE cashouts SET status = 'FAILED', updated_at = ? WHERE id = 33", (new_york,)
        )
    report = run_check(db.engine, db.settings, since=since, store=False)
    assert report.total == 1 and report.inconsistencies["status_mismatch"] == 1, report
