"""`unistatus repair`: each strategy on both backends, audited, then a clean second check.

Data: set-based INSERTs with known damage (``test_check_data``): per system, ids ending
in 1 miss their unified row, 2 have a status and a user mismatch, 3 an amount mismatch,
4 an unmappable legacy status, 5 an orphan unified row.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import IN_EVERY_LAYOUT
from support.check_data import T0, T1, damage, insert_case, populate, tables
from unistatus.cli import app
from unistatus.db.control import set_mode
from unistatus.db.tables import repair_queue, status_history
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import InputError
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair
from unistatus.migration.repair_plan import Strategy, plan_repair
from unistatus.migration.repair_queue import open_repair_count

N = 20
PER_SYSTEM = N // 10  # entities per damage pattern and system
REPAIRABLE = ("missing_unified", "status_mismatch", "field_mismatch")
mapper = LegacyStatusMapper()


def snapshot(db: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the legacy tables, unified and history (to prove nothing changed)."""
    out = {}
    with db.engine.connect() as conn:
        for system, lt in tables(db.engine, db.settings).items():
            out[system.value] = [
                tuple(r) for r in conn.execute(sa.select(lt.table).order_by(lt.id))
            ]
        out["unified"] = [tuple(r) for r in conn.execute(sa.select(U).order_by(U.c.id))]
        out["history"] = [tuple(r) for r in conn.execute(sa.select(status_history))]
        out["queue"] = [tuple(r) for r in conn.execute(sa.select(repair_queue))]
    return out


def legacy_row(db: Any, system: LegacySystemType, legacy_id: int) -> dict[str, Any]:
    lt = tables(db.engine, db.settings)[system]
    assert lt.status is not None
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.select(
                lt.status.label("status"),
                lt.user_id.label("user_id"),
                lt.amount.label("amount"),
                lt.updated_at.label("updated_at"),
            ).where(lt.id == legacy_id)
        ).one()
    return dict(row._mapping)


def unified_row(db: Any, system: LegacySystemType, legacy_id: int) -> dict[str, Any]:
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.select(U).where(U.c.legacy_system == system.value, U.c.legacy_id == legacy_id)
        ).one()
    return dict(row._mapping)


def history(db: Any) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(status_history).order_by(status_history.c.id)).mappings()
        return [dict(r) for r in rows]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_each_strategy_repairs_and_a_second_check_is_clean(db: Any, strategy: Strategy) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    cashout = LegacySystemType.CASHOUT
    if strategy is Strategy.NEWEST_WINS:
        # Damaged unified rows are newer (T1); make one legacy row newer still.
        lt = tables(db.engine, db.settings)[cashout]
        with db.engine.begin() as conn:
            conn.execute(
                sa.update(lt.table)
                .where(lt.id == 13)
                .values({lt.updated_at.key: T1 + timedelta(days=1)})
            )
    before_l2, before_u2 = legacy_row(db, cashout, 2), unified_row(db, cashout, 2)
    before_l3, before_u3 = legacy_row(db, cashout, 3), unified_row(db, cashout, 3)
    before_l13 = legacy_row(db, cashout, 13)

    report = run_repair(db.engine, db.settings, strategy=strategy, actor="tester")

    entities = 3 * 3 * PER_SYSTEM  # ids ending in 1, 2, 3 in three systems
    assert report.repaired == entities and report.failed == 0
    assert report.repaired_kinds == {
        "missing_unified": 3 * PER_SYSTEM,
        "status_mismatch": 3 * PER_SYSTEM,
        "field_mismatch": 2 * 3 * PER_SYSTEM,
    }
    assert report.skipped == {"orphan_unified": 3 * PER_SYSTEM, "unmappable_legacy": 3 * PER_SYSTEM}
    after = run_check(db.engine, db.settings, examples=0)
    for kind in REPAIRABLE:
        assert after.inconsistencies[kind] == 0, kind
    assert after.inconsistencies["orphan_unified"] == 3 * PER_SYSTEM
    assert after.inconsistencies["unmappable_legacy"] == 3 * PER_SYSTEM

    # Missing rows were created from legacy, whatever the strategy.
    created = unified_row(db, cashout, 1)
    assert created["origin"] == "repair"
    assert created["status"] == mapper.to_unified(cashout, created["legacy_status"]).value
    assert created["amount"] == Decimal("1.25")

    l2, u2 = legacy_row(db, cashout, 2), unified_row(db, cashout, 2)
    l3, u3 = legacy_row(db, cashout, 3), unified_row(db, cashout, 3)
    l13, u13 = legacy_row(db, cashout, 13), unified_row(db, cashout, 13)
    if strategy is Strategy.LEGACY_WINS:
        assert (l2["status"], l2["user_id"]) == (before_l2["status"], before_l2["user_id"])
        assert u2["status"] == mapper.to_unified(cashout, l2["status"]).value
        assert u2["user_id"] == l2["user_id"] and u3["amount"] == before_l3["amount"]
        assert u2["version"] == before_u2["version"] + 1
    else:  # unified wins (newest_wins: the damaged unified rows are newer)
        assert l2["status"] == mapper.to_legacy(cashout.transaction_type, before_u2["status"])
        assert u2["status"] == before_u2["status"] and u2["legacy_status"] == l2["status"]
        assert l2["user_id"] == before_u2["user_id"]
        assert l3["amount"] == before_u3["amount"] == before_l3["amount"] + Decimal("1e-8")
    if strategy is Strategy.NEWEST_WINS:  # the newer legacy row won for id 13
        assert u13["amount"] == l13["amount"] == before_l13["amount"]

    audit = history(db)
    assert len(audit) == entities
    assert {h["triggered_by"] for h in audit} == {"repair"}
    assert len({h["operation_id"] for h in audit}) == entities
    entry = next(h for h in audit if h["legacy_system"] == "CASHOUT" and h["legacy_id"] == 2)
    assert entry["metadata"]["strategy"] == strategy.value
    assert entry["metadata"]["actor"] == "tester"
    assert entry["metadata"]["before"]["unified"]["status"] == before_u2["status"]
    assert entry["metadata"]["before"]["legacy"]["status"] == before_l2["status"]
    assert entry["metadata"]["after"]["unified"]["status"] == u2["status"]
    assert entry["metadata"]["after"]["legacy"]["status"] == l2["status"]
    assert (entry["from_legacy_status"], entry["to_legacy_status"]) == (
        before_l2["status"],
        l2["status"],
    )
    assert (entry["from_status"], entry["to_status"]) == (before_u2["status"], u2["status"])
    # Leaving a final status (CANCELLED / FAILED) is never a listed transition: flagged.
    assert entry["override"] is (entry["from_status"] != entry["to_status"])
    assert entry["mode"] == "LEGACY_ONLY"
    missing_entry = next(h for h in audit if h["legacy_id"] == 1 and h["legacy_system"] == "ESCROW")
    assert (
        missing_entry["from_status"] is None
        and missing_entry["metadata"]["before"]["unified"] is None
    )

    again = run_repair(db.engine, db.settings, strategy=strategy)
    assert again.repaired == 0 and len(history(db)) == entities


def test_dry_run_plans_the_same_and_writes_nothing(db: Any) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    before = snapshot(db)
    dry = run_repair(db.engine, db.settings, strategy="unified_wins", dry_run=True)
    assert snapshot(db) == before
    assert dry.dry_run and dry.repaired == 3 * 3 * PER_SYSTEM
    real = run_repair(db.engine, db.settings, strategy="unified_wins")
    assert (real.repaired, real.repaired_kinds, real.skipped) == (
        dry.repaired,
        dry.repaired_kinds,
        dry.skipped,
    )


def test_limit_stops_and_a_rerun_finishes(db: Any) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    first = run_repair(db.engine, db.settings, strategy="legacy_wins", limit=5)
    assert first.repaired == 5 and first.limit_reached and len(history(db)) == 5
    rest = run_repair(db.engine, db.settings, strategy="legacy_wins")
    assert rest.repaired == 3 * 3 * PER_SYSTEM - 5 and not rest.limit_reached
    assert all(
        run_check(db.engine, db.settings, store=False).inconsistencies[k] == 0 for k in REPAIRABLE
    )


def test_a_limit_met_by_the_last_entity_is_not_reported_as_reached(db: Any) -> None:
    """`repair --limit N` with exactly N entities to repair said "stopped at --limit N;
    run again for the rest" with nothing left (exploratory review)."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    total = 3 * 3 * PER_SYSTEM
    exact = run_repair(db.engine, db.settings, strategy="legacy_wins", limit=total, dry_run=True)
    assert exact.repaired == total and not exact.limit_reached
    short = run_repair(
        db.engine, db.settings, strategy="legacy_wins", limit=total - 1, dry_run=True
    )
    assert short.repaired == total - 1 and short.limit_reached


@IN_EVERY_LAYOUT
def test_repair_queue_rows_are_repaired_and_resolved(db: Any) -> None:
    populate(db.engine, db.settings, 20)
    exchange = tables(db.engine, db.settings)[LegacySystemType.EXCHANGE]
    with db.engine.begin() as conn:
        conn.execute(
            sa.update(U)
            .where(U.c.legacy_system == "CASHOUT", U.c.legacy_id == 3)
            .values(amount=Decimal("99"))
        )
        conn.execute(sa.delete(exchange.table).where(exchange.id == 6))
        rows = [
            {"legacy_system": "CASHOUT", "legacy_id": 3},  # damaged: repaired
            {"legacy_system": "CASHOUT", "legacy_id": 4},  # already consistent
            {"transaction_id": "UTX200000000000005"},  # by UTX id only, consistent
            {"legacy_system": "EXCHANGE", "legacy_id": 6},  # orphan: stays open
            {},  # nothing to identify it: stays open
        ]
        for row in rows:
            conn.execute(
                sa.insert(repair_queue).values(
                    source="dual_write", error="secondary write failed", created_at=T0, **row
                )
            )
    assert open_repair_count(db.engine) == 5

    dry = run_repair(db.engine, db.settings, strategy="legacy_wins", dry_run=True)
    assert dry.queue_seen == 5 and dry.queue_resolved == 0 and open_repair_count(db.engine) == 5

    report = run_repair(db.engine, db.settings, strategy="legacy_wins")
    assert report.queue_seen == 5 and report.queue_resolved == 3
    assert report.repaired == 1 and report.already_consistent == 2
    assert report.skipped == {"orphan_unified": 1, "unidentifiable_queue_row": 1}
    assert open_repair_count(db.engine) == 2
    with db.engine.connect() as conn:
        resolved = conn.execute(
            sa.select(repair_queue.c.legacy_id, repair_queue.c.resolution)
            .where(repair_queue.c.resolved_at.is_not(None))
            .order_by(repair_queue.c.id)
        ).all()
    assert resolved[0].legacy_id == 3 and "legacy_wins" in resolved[0].resolution
    assert resolved[1].resolution == "already consistent"
    assert unified_row(db, LegacySystemType.CASHOUT, 3)["amount"] == Decimal("3.75")


def test_unified_only_writes_nothing_but_a_stale_legacy_status(db: Any) -> None:
    """Legacy is frozen: every difference is left for the replay (legacy_frozen)."""
    populate(db.engine, db.settings, 20)
    damage(db.engine, db.settings, 20)
    # Forced: the damaged unified side is stale on purpose here.
    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="test", force=True)
    before = snapshot(db)
    report = run_repair(db.engine, db.settings, strategy="legacy_wins")
    assert report.repaired == 0 and report.skipped["legacy_frozen"] == 3 * 3 * 2
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("strategy", "mode"),
    [
        ("unified_wins", DualWriteMode.LEGACY_ONLY),
        ("unified_wins", DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY),
        ("legacy_wins", DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY),
    ],
)
def test_an_authoritative_only_repair_never_overwrites_the_side_the_mode_reads(
    db: Any, strategy: str, mode: DualWriteMode
) -> None:
    """The monitor's repair chose its strategy by modes an operator's rollback then
    changed: unified_wins wrote the suspect unified statuses over legacy in LEGACY_ONLY
    (a probe, 5 races of 13). With ``authoritative_only`` each entity's mode, read as
    it is locked, decides: what would overwrite the side it reads is skipped; what
    writes nothing read (a missing row created) still runs."""
    populate(db.engine, db.settings, 20)
    damage(db.engine, db.settings, 20)
    set_mode(db.engine, mode, reason="test", force=True)
    before = snapshot(db)
    report = run_repair(
        db.engine, db.settings, strategy=strategy, actor="monitor", authoritative_only=True
    )
    assert report.skipped.get("side_read_by_mode", 0) > 0, report.as_dict()
    after = snapshot(db)
    if not mode.reads_unified:
        assert [after[s.value] for s in LegacySystemType] == [
            before[s.value] for s in LegacySystemType
        ]
    else:  # only rows created (missing_unified): none overwritten
        kept = {r[0]: r for r in before["unified"]}
        assert all(tuple(r) == tuple(kept[r[0]]) for r in after["unified"] if r[0] in kept)
    # The same run without the guard writes the side read (what the monitor did).
    plain = run_repair(db.engine, db.settings, strategy=strategy, actor="operator")
    assert plain.repaired > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "random_wins"},
        {"strategy": "legacy_wins", "limit": 0},
        {"strategy": "legacy_wins", "actor": " "},
    ],
)
def test_bad_input_is_a_typed_error_and_writes_nothing(db: Any, kwargs: dict[str, Any]) -> None:
    populate(db.engine, db.settings, 10)
    damage(db.engine, db.settings, 10)
    before = snapshot(db)
    with pytest.raises(InputError):
        run_repair(db.engine, db.settings, **kwargs)
    assert snapshot(db) == before


def test_special_cases_on_the_database(db: Any) -> None:
    """A refinement survives legacy_wins; a unified status with no legacy image is not
    written to legacy by unified_wins (skipped), but legacy_wins repairs it."""
    escrow = tables(db.engine, db.settings)[LegacySystemType.ESCROW]
    with db.engine.begin() as conn:
        insert_case(
            conn, escrow, 1, {"status": "ACTIVE"}, {"status": "RELEASE_PENDING", "user_id": 8}
        )
        insert_case(conn, escrow, 2, {"status": "CREATED"}, {"status": "OTP_PENDING"})
    report = run_repair(db.engine, db.settings, strategy="unified_wins")
    assert report.skipped == {"unified_status_invalid": 1} and report.repaired == 1
    assert legacy_row(db, LegacySystemType.ESCROW, 1)["user_id"] == 8
    assert legacy_row(db, LegacySystemType.ESCROW, 2)["status"] == "CREATED"

    with db.engine.begin() as conn:
        conn.execute(sa.update(U).where(U.c.legacy_id == 1).values(user_id=9))
    report = run_repair(db.engine, db.settings, strategy="legacy_wins")
    assert report.repaired == 2 and not report.skipped
    kept = unified_row(db, LegacySystemType.ESCROW, 1)
    assert (kept["status"], kept["user_id"]) == ("RELEASE_PENDING", 8)
    assert unified_row(db, LegacySystemType.ESCROW, 2)["status"] == "PENDING"
    assert run_check(db.engine, db.settings).is_consistent


# --- plans (pure) ---------------------------------------------------------------------


def _rows(ls: str, us: str, lt: Any = T0, ut: Any = T0) -> tuple[dict[str, Any], dict[str, Any]]:
    base = {"user_id": 1, "amount": Decimal("1"), "currency": "USD"}
    return (
        {"id": 1, "status": ls, "updated_at": lt, **base},
        {
            "id": "UTX200000000000001",
            "legacy_id": 1,
            "status": us,
            "legacy_status": ls,
            "updated_at": ut,
            **base,
        },
    )


def test_unified_wins_writes_the_canonical_legacy_value() -> None:
    legacy, unified = _rows("CREATED", "AWAITING_APPROVAL")
    plan = plan_repair(LegacySystemType.ESCROW, legacy, unified, Strategy.UNIFIED_WINS)
    assert plan.action == "write_legacy" and plan.legacy_values["status"] == "AWAITING_SELLER"
    assert plan.unified_values == {"legacy_status": "AWAITING_SELLER"}


def test_newest_wins_uses_updated_at_and_a_tie_goes_to_the_read_side() -> None:
    escrow = LegacySystemType.ESCROW
    legacy, unified = _rows("CREATED", "CANCELLED", lt=T1, ut=T0)
    assert plan_repair(escrow, legacy, unified, Strategy.NEWEST_WINS).winner == "legacy"
    legacy, unified = _rows("CREATED", "CANCELLED", lt=T0, ut=T1)
    assert plan_repair(escrow, legacy, unified, Strategy.NEWEST_WINS).winner == "unified"
    legacy, unified = _rows("CREATED", "CANCELLED")
    tie = {
        mode: plan_repair(escrow, legacy, unified, Strategy.NEWEST_WINS, mode).winner
        for mode in (
            DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY,
            DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY,
        )
    }
    assert tie == {
        DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY: "legacy",
        DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY: "unified",
    }


def test_orphans_and_unmappable_rows_are_never_repaired() -> None:
    escrow = LegacySystemType.ESCROW
    legacy, unified = _rows("bogus", "PENDING")
    for strategy in Strategy:
        assert plan_repair(escrow, None, unified, strategy).skip_reason == "orphan_unified"
        plan = plan_repair(escrow, legacy, unified, strategy)
        assert plan.action == "skip" and plan.skip_reason == "unmappable_legacy"
        assert plan_repair(escrow, legacy, None, strategy).action == "skip"
    assert plan_repair(escrow, *_rows("CREATED", "PENDING"), Strategy.LEGACY_WINS).action == "none"


# --- the CLI --------------------------------------------------------------------------


@IN_EVERY_LAYOUT
def test_cli_json_and_exit_codes(db: Any) -> None:
    runner = CliRunner()
    base = ["--database-url", db.url, "repair"]
    populate(db.engine, db.settings, 20)
    clean = runner.invoke(
        app, [*base, "--strategy", "legacy_wins", "--reason", "t"], catch_exceptions=False
    )
    assert clean.exit_code == 0, clean.output
    assert "repaired 0" in clean.output

    damage(db.engine, db.settings, 20)
    dry = runner.invoke(app, [*base, "--strategy", "newest_wins", "--dry-run", "--json"])
    assert dry.exit_code == 1, dry.output  # orphans and unmappable rows are left over
    data = json.loads(dry.output)
    assert data["dry_run"] is True and data["would_repair"] == 3 * 3 * 2
    assert {"strategy", "would_repair_kinds", "skipped", "failed", "repair_queue"} <= set(data)
    assert len(history(db)) == 0

    limited = runner.invoke(
        app, [*base, "--strategy", "newest_wins", "--limit", "4", "--reason", "t", "--json"]
    )
    assert json.loads(limited.output)["repaired"] == 4 and len(history(db)) == 4

    bad = runner.invoke(app, [*base, "--strategy", "coin_flip", "--reason", "t"])
    assert bad.exit_code == 2 and "unknown strategy" in bad.output


def test_a_dry_run_counts_what_it_would_repair_never_as_repaired(db: Any) -> None:
    """`repair --dry-run --json` said "repaired": 1040 and exited 0 while nothing was
    repaired and the 1040 remained: a script reading it was told they were repaired. A
    dry run says so and counts them as `would_repair` ("repaired": 0), and exits 1 when
    it found anything to repair (a check that found a problem), 0 when nothing would
    change; a real run's keys keep their meaning."""
    runner = CliRunner()
    base = ["--database-url", db.url, "repair", "--strategy", "legacy_wins"]
    populate(db.engine, db.settings, N)
    with db.engine.begin() as conn:  # only what any strategy repairs: missing_unified
        conn.execute(sa.delete(U).where(U.c.legacy_id % 10 == 1))
    missing = 3 * PER_SYSTEM

    dry = runner.invoke(app, [*base, "--dry-run", "--json"])
    assert dry.exit_code == 1, dry.output  # nothing else is left: only what it would do
    data = json.loads(dry.output)
    assert data["dry_run"] is True and data["repaired"] == 0, data
    assert data["would_repair"] == missing, data
    assert data["repaired_kinds"] == {} and data["would_repair_kinds"] == {
        "missing_unified": missing
    }
    assert len(history(db)) == 0
    text = runner.invoke(app, [*base, "--dry-run"])
    assert text.exit_code == 1 and f"would repair {missing}" in text.output, text.output

    done = runner.invoke(app, [*base, "--reason", "t", "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert data["dry_run"] is False and data["repaired"] == missing, data
    assert data["repaired_kinds"] == {"missing_unified": missing}
    assert data["would_repair"] == 0 and data["would_repair_kinds"] == {}

    again = runner.invoke(app, [*base, "--dry-run", "--json"])
    assert again.exit_code == 0, again.output  # nothing would change
    data = json.loads(again.output)
    assert data["would_repair"] == 0 and data["repaired"] == 0, data


def test_a_database_that_refuses_every_write_stops_the_repair_at_once(db: Any) -> None:
    """A read-only database (a replica, default_transaction_read_only) failed every
    entity on its own: a warning per row, hundreds of them, and exit 1 as if some rows
    were left. The first such error stops the run: a StorageError (exit 2)."""
    from unistatus.db.engine import create_engine
    from unistatus.errors import StorageError

    populate(db.engine, db.settings, 40)
    damage(db.engine, db.settings, 40)
    if db.backend == "sqlite":
        path = db.url.removeprefix("sqlite:///")
        read_only = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    else:
        read_only = create_engine(
            db.url, connect_args={"options": "-c default_transaction_read_only=on"}
        )
    before = snapshot(db)
    try:
        with pytest.raises(StorageError, match=r"(?i)read.?only") as stopped:
            run_repair(read_only, db.settings, strategy="legacy_wins", reason="t")
        assert "stopped" in str(stopped.value)
    finally:
        read_only.dispose()
    assert snapshot(db) == before


def test_a_legacy_row_beyond_the_utx_range_is_left_for_an_operator(db: Any) -> None:
    """Its unified row would need an id no UTX id holds (19 characters: refused by
    PostgreSQL's column, stored malformed by SQLite): skipped with its reason."""
    from support.legacy_rows import insert_cashout
    from unistatus.domain.ids import MAX_LEGACY_ID

    populate(db.engine, db.settings, 5)
    insert_cashout(db.engine, MAX_LEGACY_ID + 7)
    report = run_repair(db.engine, db.settings, strategy="legacy_wins", reason="t")
    assert report.skipped == {"id_beyond_utx_range": 1} and report.failed == 0
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.max(sa.func.length(U.c.id)))).scalar_one() == 18


def test_a_repair_of_one_system_leaves_the_others_as_they_are(db: Any) -> None:
    """``--system``: a system in DUAL_WRITE_UNIFIED_PRIMARY must not be repaired
    ``legacy_wins`` by a repair meant for one still legacy-primary (the plan of that one
    system listed `repair --strategy legacy_wins` for every system)."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)

    def escrows() -> list[tuple[Any, ...]]:
        with db.engine.connect() as conn:
            rows = conn.execute(sa.select(U).where(U.c.legacy_system == "ESCROW").order_by(U.c.id))
            return [tuple(r) for r in rows]

    before = escrows()
    only = run_repair(db.engine, db.settings, strategy="legacy_wins", systems=["cashout"])
    assert only.repaired == 3 * PER_SYSTEM
    assert escrows() == before
    left = run_check(db.engine, db.settings, store=False).per_system
    assert left["CASHOUT"]["inconsistencies"]["status_mismatch"] == 0
    assert left["ESCROW"]["inconsistencies"]["status_mismatch"] > 0
    shown = CliRunner().invoke(
        app,
        ["--database-url", db.url, "repair", "--strategy", "legacy_wins", "--dry-run"]
        + ["--json", "--system", "escrow"],
    )
    assert shown.exit_code == 1, shown.output  # 1: a dry run leaves what it found
    assert json.loads(shown.stdout)["would_repair"] == 3 * PER_SYSTEM
    with pytest.raises(InputError, match="bonds"):
        run_repair(db.engine, db.settings, strategy="legacy_wins", systems=["bonds"])


def _said(report: Any) -> list[str]:
    """The report's warnings but that of a backfill not run (tests/cli/
    test_repair_before_backfill.py)."""
    return [w for w in report.warnings if not w.startswith("the backfill of")]


def test_a_strategy_that_overwrites_the_side_the_mode_reads_is_warned_of(db: Any) -> None:
    """`repair --strategy unified_wins` while legacy is primary turned an authoritative
    legacy SUCCESS into FAILED without a word (exploratory review: documented, but an
    operator who picks the wrong strategy got no warning). The report (and the command)
    says which systems' authoritative values it overwrites, and the strategy to keep."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 2")
    wrong = run_repair(db.engine, db.settings, strategy="unified_wins", dry_run=True)
    # (Those of the rows the backfill would copy aside: it never ran here.)
    assert wrong.warnings and all("legacy_wins" in w for w in _said(wrong)), wrong.warnings
    assert {w.split(":")[0] for w in _said(wrong)} == {"CASHOUT", "ESCROW", "EXCHANGE"}
    right = run_repair(db.engine, db.settings, strategy="legacy_wins", dry_run=True)
    assert _said(right) == []
    shown = CliRunner().invoke(
        app, ["--database-url", db.url, "repair", "--strategy", "unified_wins", "--dry-run"]
    )
    assert "authoritative" in " ".join(shown.output.split()), shown.output
    assert json.loads(
        CliRunner()
        .invoke(
            app,
            ["--database-url", db.url, "repair", "--strategy", "unified_wins", "--dry-run",
             "--json"],
        )
        .stdout
    )["warnings"] == wrong.warnings  # fmt: skip


@pytest.mark.postgres
def test_newest_wins_reads_naive_legacy_times_in_the_sessions_time_zone(
    scratch_pg: Any,
) -> None:
    """Legacy ``updated_at`` as ``timestamp without time zone``, the database's TimeZone
    Asia/Kathmandu (+05:45): legacy written at ``localtime``, unified 2 s later; unified
    is the newer write and wins, as PostgreSQL itself compares the two."""
    db = scratch_pg
    with db.engine.begin() as conn:
        for column in ("updated_at", "created_at"):
            conn.exec_driver_sql(
                f"ALTER TABLE cashouts ALTER COLUMN {column} TYPE timestamp without time zone"
                f" USING {column} AT TIME ZONE 'UTC'"
            )
        name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
        conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET TimeZone = 'Asia/Kathmandu'")
    db.engine.dispose()  # new connections take the database's TimeZone
    populate(db.engine, db.settings, 10)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE cashouts SET status = 'FAILED', updated_at = localtimestamp WHERE id = 6"
        )
        conn.execute(
            sa.update(U)
            .where(U.c.legacy_system == "CASHOUT", U.c.legacy_id == 6)
            .values(
                status="CANCELLED",
                legacy_status="CANCELLED",
                updated_at=sa.func.now() + sa.text("interval '2 seconds'"),
            )
        )
    run_repair(
        db.engine, db.settings, strategy=Strategy.NEWEST_WINS, actor="t", systems=["cashout"]
    )
    assert legacy_row(db, LegacySystemType.CASHOUT, 6)["status"] == "CANCELLED"
    assert unified_row(db, LegacySystemType.CASHOUT, 6)["status"] == "CANCELLED"
