"""Reversible legacy-column cleanup (revision 0006) on SQLite and PostgreSQL.

Every test that drops the columns undoes it in a ``finally``: the PostgreSQL test
database is shared by the whole run.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.util import CommandError
from typer.testing import CliRunner

from conftest import IN_EVERY_LAYOUT, PG_IN_EVERY_LAYOUT, Database
from support.blocking import (
    WRITE_BESIDE_A_WAITING_SWITCH_SECONDS,
    collector_paused,
    queue_behind_any_holder,
    wait_until_it_blocks,
)
from support.engines import at_repeatable_read
from unistatus.adapter.core import DualWriteAdapter
from unistatus.cli import app
from unistatus.config import Settings
from unistatus.db import schema
from unistatus.db.binding import schema_of
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.tables import cashouts, unified_transactions
from unistatus.domain.ids import derive_utx_id
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import ConfigError, GateError, InputError, ModeLockBusyError
from unistatus.migration import capture, rollback
from unistatus.migration import compat_views as compat_views_module
from unistatus.migration import retire as retire_module
from unistatus.migration.archive import export_archive, record_verified, verify_archive
from unistatus.migration.compat_views import COMPAT_SCHEMA, compat_views
from unistatus.migration.retire import (
    drop_compat_views,
    legacy_columns_dropped,
    retire_legacy_columns,
    status_checksum,
    undo_cleanup,
)
from unistatus.migration.rollout_plan import rollout_plan

LEGACY = ("cashouts", "escrows", "exchanges")


def status_columns(db: Database) -> dict[str, bool]:
    inspector = sa.inspect(db.engine)
    return {t: "status" in {c["name"] for c in inspector.get_columns(t)} for t in LEGACY}


def seed(db: Database) -> dict[str, str]:
    """Transactions written in dual-write, with legacy values a canonical reverse
    mapping would not give back (COMPLETED on a cashout, PENDING_SELLER, RATE_LOCKED)."""
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
    a = DualWriteAdapter(db.engine, settings=db.settings)
    walks = {
        "WALLET_CASHOUT": ["OTP_PENDING", "APPROVED", "EXECUTING", "COMPLETED"],
        "ESCROW": ["PENDING_SELLER", "PAYMENT_PENDING"],
        "EXCHANGE": ["RATE_LOCKED"],
    }
    ids: dict[str, str] = {}
    for ttype, steps in walks.items():
        for n in range(3):
            created = a.create_transaction(ttype, 7 + n, "10.50", "USD")
            assert created.overall_success and created.entity_id
            for step in steps[: len(steps) - n]:
                assert a.update_status(created.entity_id, step, "seed", "test").overall_success
            ids[f"{ttype}{n}"] = created.entity_id
    return ids


def freeze_and_archive(db: Database, tmp_path: Path) -> Path:
    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="test: phase 4")
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    record_verified(db.engine, verify_archive(db.engine, out), actor="test")
    return out


@pytest.fixture
def retirable(db: Database, tmp_path: Path) -> Iterator[Database]:
    """Seeded, frozen, archived; the columns are restored after the test, whatever happens."""
    seed(db)
    freeze_and_archive(db, tmp_path)
    try:
        yield db
    finally:
        undo_cleanup(db.engine, db.settings)


def test_fresh_install_keeps_legacy_columns(db: Database) -> None:
    assert schema.current_revision(db.engine) == schema.INSTALL_REVISION
    assert schema.head_revision() == schema.RETIRE_REVISION
    assert not legacy_columns_dropped(db.engine, db.settings)
    assert all(status_columns(db).values())


@IN_EVERY_LAYOUT
def test_drop_then_undo_restores_statuses_exactly(retirable: Database) -> None:
    db = retirable
    before = status_checksum(db.engine, db.settings)
    assert before["rows"] == 9
    result = retire_legacy_columns(db.engine, db.settings, actor="test")
    assert result["dropped"] and result["checksum_before"] == before
    assert schema.current_revision(db.engine) == "0006"
    assert legacy_columns_dropped(db.engine, db.settings)
    assert not any(status_columns(db).values())
    # The rest of every legacy row is untouched.
    assert sum(db.count(t) for t in LEGACY) == 9
    # `init` on a retired database changes nothing (Alembic never downgrades).
    assert schema.upgrade(db.engine, db.settings) == "0006"
    # A second drop is a no-op.
    assert retire_legacy_columns(db.engine, db.settings)["already_dropped"]
    # The plan reads a retired database (nothing to sample without the status column),
    # and says a rollback restores the columns first.
    plan = rollout_plan(db.engine, db.settings)
    assert all(f.check is None and f.backfill is None for f in plan.figures.values())
    assert any("restore the legacy status columns" in a for a in plan.emergency.actions)

    undone = undo_cleanup(db.engine, db.settings, actor="test")
    assert undone["undone"] and undone["revision"] == schema.INSTALL_REVISION
    assert undone["checksum_after"] == before
    assert status_checksum(db.engine, db.settings) == before
    assert all(status_columns(db).values())
    with db.app_engine.connect() as conn:
        values = set(conn.execute(sa.select(cashouts.c.status)).scalars())
    assert "COMPLETED" in values  # the exact legacy value, not the canonical SUCCESS
    assert not undo_cleanup(db.engine, db.settings)["undone"]


def test_adapter_keeps_writing_in_unified_only_while_dropped(
    retirable: Database,
) -> None:
    db = retirable
    seed_ids = _entity_ids(db)
    retire_legacy_columns(db.engine, db.settings)
    a = DualWriteAdapter(db.engine, settings=db.settings)
    assert a.mode is DualWriteMode.UNIFIED_ONLY
    born = a.create_transaction("ESCROW", 3, "5", "EUR")
    assert born.overall_success and born.entity_id
    assert a.update_status(born.entity_id, "AWAITING_APPROVAL", "t", "test").overall_success
    # A transaction that came from legacy: its unified row is written, legacy_status too.
    escrow = seed_ids["ESCROW"]
    result = a.update_status(escrow, "PAYMENT_CONFIRMED", "t", "test")
    assert result.overall_success and result.legacy_status == "PAYMENT_CONFIRMED"
    undo_cleanup(db.engine, db.settings)
    # The undo refills from unified_transactions.legacy_status: the change made while
    # the column was gone is in legacy now (what a rollback out of phase 4 needs).
    legacy_id = int(escrow[4:])
    tables = resolve_legacy_tables(db.engine, db.settings)
    lt = tables[LegacySystemType.ESCROW]
    assert lt.status is not None
    with db.engine.connect() as conn:
        status = conn.execute(sa.select(lt.status).where(lt.id == legacy_id)).scalar_one()
    assert status == "PAYMENT_CONFIRMED"


def test_adapter_reads_legacy_born_transaction_while_dropped(retirable: Database) -> None:
    db = retirable
    entity = _entity_ids(db)["ESCROW"]
    retire_legacy_columns(db.engine, db.settings)
    status, meta = DualWriteAdapter(db.engine, settings=db.settings).get_transaction_status(entity)
    assert status is not None and meta["source"] == "unified"


def _entity_ids(db: Database) -> dict[str, str]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT legacy_system, min(legacy_id) "
                f"FROM {db.table('unified_transactions')} GROUP BY 1"
            )
        ).all()
    return {
        LegacySystemType(system).transaction_type.value: derive_utx_id(
            LegacySystemType(system), int(legacy_id)
        )
        for system, legacy_id in rows
    }


def _assert_unchanged(db: Database, before: dict[str, object]) -> None:
    assert schema.current_revision(db.engine) == schema.INSTALL_REVISION
    assert all(status_columns(db).values())
    assert status_checksum(db.engine, db.settings) == before


@IN_EVERY_LAYOUT
def test_refusals_change_nothing(db: Database, tmp_path: Path) -> None:
    seed(db)
    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="test")
    before = status_checksum(db.engine, db.settings)
    with pytest.raises(GateError, match="no verified archive"):
        retire_legacy_columns(db.engine, db.settings)
    _assert_unchanged(db, before)

    out = freeze_and_archive(db, tmp_path)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, reason="test: back to phase 3")
    with pytest.raises(GateError, match="not UNIFIED_ONLY"):
        retire_legacy_columns(db.engine, db.settings)
    # `upgrade head` names no one revision (main and retire are two heads): refused.
    with pytest.raises(CommandError, match="Multiple head revisions"):
        schema.upgrade(db.engine, db.settings, "head")
    # Even a direct upgrade to every head is refused by the revision itself.
    with pytest.raises(GateError, match="not UNIFIED_ONLY"):
        schema.upgrade(db.engine, db.settings, "heads")
    _assert_unchanged(db, before)

    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="test")
    (out / "exchanges.jsonl.gz").unlink()
    with pytest.raises(GateError, match="exchanges.jsonl.gz: missing"):
        retire_legacy_columns(db.engine, db.settings)
    _assert_unchanged(db, before)

    with db.app_engine.begin() as conn:  # a legacy row with no unified row (never backfilled)
        conn.execute(
            sa.insert(cashouts).values(
                user_id=1,
                amount=1,
                currency="USD",
                status="PENDING",
                created_at=sa.func.now(),
                updated_at=sa.func.now(),
            )
        )
    with pytest.raises(GateError, match="1 row\\(s\\) of cashouts could not be restored"):
        retire_legacy_columns(db.engine, db.settings)
    assert schema.current_revision(db.engine) == schema.INSTALL_REVISION
    assert all(status_columns(db).values())


def test_cli(sqlite_db: Database, tmp_path: Path) -> None:
    db = sqlite_db
    runner = CliRunner()
    base = ["--database-url", db.url, "retire", "legacy-columns", "--reason", "phase 4"]
    seed(db)
    refused = runner.invoke(app, base)
    assert refused.exit_code == 2 and "refusing to drop" in refused.output
    assert all(status_columns(db).values())
    freeze_and_archive(db, tmp_path)
    before = status_checksum(db.engine, db.settings)
    done = runner.invoke(app, [*base, "--json"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["dropped"] is True
    assert not any(status_columns(db).values())
    undone = runner.invoke(app, [*base, "--undo", "--json"], catch_exceptions=False)
    assert undone.exit_code == 0, undone.output
    assert json.loads(undone.stdout)["checksum_after"] == before


def test_drop_and_undo_under_live_unified_only_writes(retirable: Database) -> None:
    """Writers keep going while the columns are dropped and restored (no error)."""
    import threading

    db = retirable
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    stop = threading.Event()
    errors: list[str] = []
    writes = [0]

    def writer() -> None:
        while not stop.is_set():
            try:
                created = adapter.create_transaction("EXCHANGE", 5, "1.25", "BTC")
                assert created.entity_id is not None
                updated = adapter.update_status(created.entity_id, "RATE_LOCKED", "t", "test")
                for r in (created, updated):
                    if not r.overall_success:
                        errors.append(str(r.error))
                writes[0] += 2
            except Exception as exc:  # any failure fails the test below
                errors.append(repr(exc))

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        assert retire_legacy_columns(db.engine, db.settings)["dropped"]
        assert undo_cleanup(db.engine, db.settings)["undone"]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert writes[0] > 0
    assert all(status_columns(db).values())


# --- compatibility views (--compat-views) ---------------------------------------------

READER_SQL = (
    "SELECT id, status, user_id, amount, currency FROM {table} "
    "WHERE status <> 'NO_SUCH' AND amount > 0 ORDER BY id"
)


def raw_reader(db: Database) -> sa.Engine:
    """An application's own reader: plain SQLAlchemy, the compatibility schema first in
    its search_path (it does not exist before retirement: the tables are read then)."""
    return sa.create_engine(
        db.url, connect_args={"options": f"-c search_path={COMPAT_SCHEMA},public"}
    )


def read_all(reader: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    with reader.connect() as conn:
        return {
            t: [tuple(r) for r in conn.execute(sa.text(READER_SQL.format(table=t)))] for t in LEGACY
        }


@PG_IN_EVERY_LAYOUT
def test_compat_views_serve_a_raw_reader_through_retirement(pg: Database, tmp_path: Path) -> None:
    db = pg
    seed(db)
    freeze_and_archive(db, tmp_path)
    reader = raw_reader(db)
    try:
        before = read_all(reader)
        assert sum(len(rows) for rows in before.values()) == 9
        star = "SELECT * FROM cashouts LIMIT 0"
        with reader.connect() as conn:
            table_columns = list(conn.execute(sa.text(star)).keys())
        result = retire_legacy_columns(db.engine, db.settings, actor="test", compat=True)
        assert result["dropped"] and result["compat_views"]["views"] == sorted(LEGACY)
        assert not any(status_columns(db).values())
        reader.dispose()  # a new session: PostgreSQL caches no plan across the DDL anyway
        assert read_all(reader) == before
        # The view keeps the column where the table had it (SELECT * readers).
        with reader.connect() as conn:
            assert list(conn.execute(sa.text(star)).keys()) == table_columns
        # A change made after retirement reaches the reader through legacy_status.
        escrow = _entity_ids(db)["ESCROW"]
        adapter = DualWriteAdapter(db.engine, settings=db.settings)
        assert adapter.update_status(escrow, "PAYMENT_CONFIRMED", "t", "test").overall_success
        with reader.connect() as conn:
            status = conn.execute(
                sa.text("SELECT status FROM escrows WHERE id = :id"), {"id": int(escrow[4:])}
            ).scalar_one()
        assert status == "PAYMENT_CONFIRMED"
        before["escrows"] = read_all(reader)["escrows"]
        # Again once dropped: the views are made again, nothing else changes.
        again = retire_legacy_columns(db.engine, db.settings, actor="test", compat=True)
        assert again["already_dropped"] and again["compat_views"]["views"] == sorted(LEGACY)
        assert read_all(reader) == before

        undone = undo_cleanup(db.engine, db.settings, actor="test")
        assert undone["compat_views_dropped"] == sorted(LEGACY)
        assert compat_views(db.engine) == []
        with db.engine.connect() as conn:
            schemas = sa.inspect(conn).get_schema_names()
        assert COMPAT_SCHEMA not in schemas
        reader.dispose()
        assert read_all(reader) == before  # the restored tables, read directly again
    finally:
        reader.dispose()
        undo_cleanup(db.engine, db.settings)


@PG_IN_EVERY_LAYOUT
def test_retirement_is_undone_by_a_role_that_reads_through_the_views(
    pg: Database, tmp_path: Path
) -> None:
    """One role for the application and its operators, given the compatibility schema
    first in its search_path for the readers: unistatus run as that role still finds the
    legacy tables (not the views of the same names) and undoes the retirement."""
    db = pg
    seed(db)
    freeze_and_archive(db, tmp_path)
    reader = raw_reader(db)
    operator = reading_role(db)
    try:
        before = read_all(reader)
        checksum = status_checksum(db.engine, db.settings)
        retire_legacy_columns(operator, db.settings, actor="test", compat=True)
        assert not any(status_columns(db).values())
        assert compat_views(db.engine) == sorted(LEGACY)
        # Again, now that the views are there: made again, the tables left alone.
        again = retire_legacy_columns(operator, db.settings, actor="test", compat=True)
        assert again["already_dropped"] and compat_views(db.engine) == sorted(LEGACY)
        undone = undo_cleanup(operator, db.settings, actor="test")
        assert undone["undone"] and undone["compat_views_dropped"] == sorted(LEGACY)
        assert all(status_columns(db).values())
        assert status_checksum(db.engine, db.settings) == checksum
        reader.dispose()
        assert read_all(reader) == before
    finally:
        operator.dispose()
        reader.dispose()
        undo_cleanup(db.engine, db.settings)


def reading_role(db: Database) -> sa.Engine:
    """unistatus's engine for a role that has the compatibility schema first in its
    search_path (the readers' role, as often the application's and the operators')."""
    return create_engine(
        db.url,
        schema=schema_of(db.engine),
        connect_args={"options": f"-c search_path={COMPAT_SCHEMA},public"},
    )


@PG_IN_EVERY_LAYOUT
def test_a_role_reading_through_the_views_sees_the_tables_and_rolls_back(
    pg: Database, tmp_path: Path
) -> None:
    """Retired, the views in place, unistatus run as that role: it reflects the legacy
    tables (no status column), not the views of the same names, finds its own tables
    where they are, and an emergency rollback replays a change made in UNIFIED_ONLY into
    the tables (restored with the views dropped in the same transaction)."""
    db = pg
    ids = seed(db)
    freeze_and_archive(db, tmp_path)
    operator = reading_role(db)
    try:
        retire_legacy_columns(db.engine, db.settings, actor="test", compat=True)
        tables = resolve_legacy_tables(operator, db.settings, require_status=False)
        assert {lt.name: lt.status is None for lt in tables.values()} == dict.fromkeys(LEGACY, True)
        with operator.connect() as conn, db.engine.connect() as plain:
            assert capture.own_schema(conn) == capture.own_schema(plain)
        adapter = DualWriteAdapter(operator, settings=db.settings)
        moved = adapter.update_status(ids["ESCROW0"], "PAYMENT_CONFIRMED", "w", "test")
        assert moved.overall_success and moved.mode is DualWriteMode.UNIFIED_ONLY

        done = rollback.emergency_rollback(operator, db.settings, actor="ops", reason="drill")
        assert done["replay"]["undo_cleanup"]["compat_views_dropped"] == sorted(LEGACY)
        # The undo's refill wrote the change (marked replayed): nothing left to replay.
        assert done["replay"]["undo_cleanup"]["pending_covered"] == 1
        assert done["replay"]["replayed"] == 0 and compat_views(db.engine) == []
        assert all(status_columns(db).values())
        escrow = int(ids["ESCROW0"][4:])
        assert db.scalar("SELECT status FROM escrows WHERE id = :id", id=escrow) == (
            "PAYMENT_CONFIRMED"
        )
    finally:
        operator.dispose()
        undo_cleanup(db.engine, db.settings)


@pytest.mark.postgres
def test_an_undo_while_readers_query_the_views_commits(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader queries a view while the undo refills the restored columns (a long
    refill, held open here). The undo must not lock the tables and then the views (a
    reader locks a view, then its tables: a deadlock, the rollback out of phase 4 with
    it): it commits, and the reader then reads the restored table."""
    db = pg
    seed(db)
    freeze_and_archive(db, tmp_path)
    retire_legacy_columns(db.engine, db.settings, actor="test", compat=True)
    refilling, release = held(monkeypatch, capture, "restore_in")
    reader = raw_reader(db)
    try:
        with ThreadPoolExecutor(2) as pool:
            undo = pool.submit(undo_cleanup, db.engine, db.settings, actor="test")
            assert refilling.wait(30)
            with reader.connect() as conn:
                read = pool.submit(
                    lambda: conn.execute(sa.text(READER_SQL.format(table="cashouts"))).all()
                )
                assert wait_until_it_blocks(db.engine, holding_the_tables(db), 20)
                time.sleep(1.5)  # past deadlock_timeout: the reader's own check found nothing
                release.set()
                assert undo.result(60)["undone"]
                assert len(read.result(60)) == 3
        assert all(status_columns(db).values()) and compat_views(db.engine) == []
    finally:
        release.set()
        reader.dispose()
        undo_cleanup(db.engine, db.settings)


@pytest.mark.postgres
def test_an_undo_behind_a_reader_of_the_views_waits_politely_then_gives_up(
    pg: Database, tmp_path: Path
) -> None:
    """A reader's transaction stays open on a view: the undo waits for it as a mode switch
    waits for writers (the mode lock let go between attempts: the adapter's writes go on
    meanwhile), then gives up naming the reader, and the retirement stands as it was."""
    db = pg
    ids = seed(db)
    freeze_and_archive(db, tmp_path)
    retire_legacy_columns(db.engine, db.settings, actor="test", compat=True)
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    reader = raw_reader(db)
    settings = db.settings.model_copy(update={"mode_lock_wait_seconds": 3.0})
    try:
        with reader.connect() as conn, ThreadPoolExecutor(1) as pool:
            conn.execute(sa.text(READER_SQL.format(table="escrows"))).all()
            undo = pool.submit(undo_cleanup, db.engine, settings, actor="test")
            time.sleep(1.0)
            assert not undo.done()
            started = time.monotonic()
            moved = adapter.update_status(ids["ESCROW0"], "PAYMENT_CONFIRMED", "w", "test")
            assert moved.overall_success and time.monotonic() - started < 0.5
            with pytest.raises(ModeLockBusyError, match="every use of unistatus_compat") as e:
                undo.result(30)
            assert "idle in transaction" in str(e.value)
        assert not any(status_columns(db).values())
        assert compat_views(db.engine) == sorted(LEGACY)
    finally:
        adapter.close()
        reader.dispose()
        undo_cleanup(db.engine, db.settings)


@pytest.mark.postgres
def test_a_reader_never_meets_a_table_without_its_status_during_retirement(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--compat-views`: a reader with the views first in its search_path queries while
    the retirement is between its drop and its views (held there): it must not find the
    table without its status column, but wait and read the views."""
    db = pg
    seed(db)
    freeze_and_archive(db, tmp_path)
    building, release = held(monkeypatch, compat_views_module, "view_selects")
    reader = raw_reader(db)
    try:
        with ThreadPoolExecutor(2) as pool:
            retire = pool.submit(
                retire_legacy_columns, db.engine, db.settings, actor="test", compat=True
            )
            assert building.wait(30)
            read = pool.submit(read_all, reader)
            assert wait_until_it_blocks(db.engine, holding_the_tables(db), 20)
            release.set()
            assert retire.result(60)["compat_views"]["views"] == sorted(LEGACY)
            assert sum(len(rows) for rows in read.result(60).values()) == 9
    finally:
        release.set()
        reader.dispose()
        undo_cleanup(db.engine, db.settings)


@pytest.mark.postgres
def test_views_made_again_only_over_retired_columns(pg: Database, tmp_path: Path) -> None:
    """`--compat-views` given again checks, under the mode lock, that the columns are still
    retired: an undo that committed since the first look leaves no views behind it."""
    db = pg
    seed(db)
    freeze_and_archive(db, tmp_path)
    with pytest.raises(GateError, match="restored meanwhile"):
        retire_module._views_again(db.engine, db.settings, "test", "again")
    assert compat_views(db.engine) == []


def held(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str
) -> tuple[threading.Event, threading.Event]:
    """``owner.name`` made to wait, once called, until released: (reached, release)."""
    reached, release = threading.Event(), threading.Event()
    original = getattr(owner, name)

    def waiting(*args: Any, **kwargs: Any) -> Any:
        reached.set()
        assert release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, waiting)
    return reached, release


def holding_the_tables(db: Database) -> int:
    """The backend whose transaction holds the legacy tables (an undo's, a retirement's)."""
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT l.pid FROM pg_locks l WHERE l.relation = to_regclass('escrows') "
                    "AND l.mode = 'AccessExclusiveLock' AND l.granted LIMIT 1"
                )
            ).scalar_one()
        )


@PG_IN_EVERY_LAYOUT
def test_compat_views_undo_alone_keeps_the_columns_dropped(pg: Database, tmp_path: Path) -> None:
    db = pg
    seed(db)
    freeze_and_archive(db, tmp_path)
    try:
        retire_legacy_columns(db.engine, db.settings, compat=True)
        assert compat_views(db.engine) == sorted(LEGACY)
        dropped = drop_compat_views(db.engine, db.settings, actor="test", reason="converted")
        assert dropped["dropped"] == sorted(LEGACY) and compat_views(db.engine) == []
        assert legacy_columns_dropped(db.engine, db.settings)
        assert drop_compat_views(db.engine, db.settings)["dropped"] == []
    finally:
        undo_cleanup(db.engine, db.settings)


def test_compat_views_refused_on_sqlite(sqlite_db: Database, tmp_path: Path) -> None:
    db = sqlite_db
    seed(db)
    freeze_and_archive(db, tmp_path)
    before = status_checksum(db.engine, db.settings)
    with pytest.raises(InputError, match="--compat-views needs PostgreSQL"):
        retire_legacy_columns(db.engine, db.settings, compat=True)
    _assert_unchanged(db, before)
    runner = CliRunner()
    base = ["--database-url", db.url, "retire", "legacy-columns", "--compat-views"]
    refused = runner.invoke(app, [*base, "--reason", "phase 4"])
    assert refused.exit_code == 2 and "needs PostgreSQL" in refused.output
    _assert_unchanged(db, before)


@pytest.mark.postgres
def test_compat_views_cli(pg: Database, tmp_path: Path) -> None:
    db = pg
    seed(db)
    freeze_and_archive(db, tmp_path)
    runner = CliRunner()
    base = ["--database-url", db.url, "retire", "legacy-columns", "--reason", "phase 4"]
    try:
        done = runner.invoke(app, [*base, "--compat-views"], catch_exceptions=False)
        assert done.exit_code == 0, done.output
        assert f"SET search_path = {COMPAT_SCHEMA}, public" in " ".join(done.output.split())
        views = runner.invoke(app, [*base, "--compat-views", "--undo", "--json"])
        assert views.exit_code == 0, views.output
        assert json.loads(views.stdout)["dropped"] == sorted(LEGACY)
        assert legacy_columns_dropped(db.engine, db.settings)
    finally:
        undo_cleanup(db.engine, db.settings)


def _retire_beside_a_callers_transaction(
    db: Database, settings: Settings, archive: Path
) -> tuple[list[BaseException | dict[str, object]], threading.Thread, sa.Connection, int]:
    """Seeded, frozen and archived; a caller's transaction holding an escrow's change
    open (the installation's mode lock shared); retire started in a thread behind it."""
    ids = seed(db)
    freeze_and_archive(db, archive)
    a = DualWriteAdapter(db.engine, settings=db.settings)
    outcome: list[BaseException | dict[str, object]] = []

    def retire() -> None:
        try:
            outcome.append(retire_legacy_columns(db.engine, settings, actor="t", reason="t"))
        except BaseException as exc:  # reported by the test
            outcome.append(exc)

    caller = db.engine.connect()
    try:
        caller.begin()
        changed = a.update_status(
            ids["ESCROW0"], "PAYMENT_CONFIRMED", "paid", "svc", connection=caller
        )
        assert changed.overall_success, changed.error
        pid = int(caller.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    except BaseException:
        caller.close()
        raise
    worker = threading.Thread(target=retire)
    worker.start()
    return outcome, worker, caller, pid


@pytest.mark.postgres
def test_retire_waiting_for_a_callers_transaction_does_not_stop_other_writers(
    pg: Database, tmp_path: Path
) -> None:
    """Retirement takes the installation's mode lock exclusive. Queued behind a caller's
    open transaction with a plain lock_timeout (5 s), it held every adapter write of
    every system behind it (PostgreSQL grants no lock past a waiting exclusive one):
    it now waits the way a mode switch does, and drops once the caller commits."""
    # Before, the first write after retire queued (within the 3 s watched below) waited
    # out its whole lock_timeout: well past what a write may take beside the polite wait.
    bound = WRITE_BESIDE_A_WAITING_SWITCH_SECONDS
    assert bound < pg.settings.lock_timeout_ms / 1000 - 1.0
    outcome, worker, caller, _ = _retire_beside_a_callers_transaction(pg, pg.settings, tmp_path)
    took: list[float] = []
    try:
        # Other writers, for 3 s after retire began (its checks first, then the wait).
        a = DualWriteAdapter(pg.engine, settings=pg.settings)
        until = time.monotonic() + 3.0
        with collector_paused():
            while time.monotonic() < until:
                started = time.monotonic()
                born = a.create_transaction("ESCROW", 3, "5", "EUR")
                took.append(time.monotonic() - started)
                assert born.overall_success, born.error
        assert max(took) < bound, f"a writer waited {max(took):.1f} s behind a waiting retire"
        assert not outcome  # still waiting for the caller
        caller.commit()
        worker.join(60)
        assert outcome and isinstance(outcome[0], dict), outcome
        assert outcome[0]["dropped"]
    finally:
        caller.close()
        worker.join(60)
        undo_cleanup(pg.engine, pg.settings)


def _capture_triggers_on_cashouts(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'cashouts'::regclass "
                "AND NOT tgisinternal"
            ).scalar_one()
        )


@pytest.mark.postgres
def test_retire_gives_up_on_a_transaction_left_open_and_names_it(
    pg: Database, tmp_path: Path
) -> None:
    """After ``mode_lock_wait_seconds`` it gives up naming the session, leaving the
    columns and the capture as they were (before: a lock timeout after lock_timeout_ms,
    unnamed). The capture's triggers stay in place while it waits: they go once no
    adapter write is in flight (before, their drop came first, behind the caller's
    transaction: a lock timeout)."""
    capture.enable(pg.engine, pg.settings, actor="t", reason="t")
    triggers = _capture_triggers_on_cashouts(pg)
    hurried = pg.settings.model_copy(update={"mode_lock_wait_seconds": 2.0})
    try:
        outcome, worker, caller, pid = _retire_beside_a_callers_transaction(pg, hurried, tmp_path)
        try:
            time.sleep(1.0)  # waiting now
            assert not outcome and _capture_triggers_on_cashouts(pg) == triggers > 0
            worker.join(30)
            caller.rollback()
        finally:
            caller.close()
            worker.join(30)
            undo_cleanup(pg.engine, pg.settings)
        assert outcome and isinstance(outcome[0], ModeLockBusyError), outcome
        assert f"pid {pid} (" in str(outcome[0]) and "nothing was changed" in str(outcome[0])
        assert all(status_columns(pg).values())
        assert not legacy_columns_dropped(pg.engine, pg.settings)
        assert _capture_triggers_on_cashouts(pg) == triggers
    finally:
        capture.disable(pg.engine, pg.settings, actor="t", reason="t")


def _cashout_of(db: Database, entity_id: str) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT legacy_id FROM unified_transactions WHERE id = :id"),
                {"id": entity_id},
            ).scalar_one()
        )


def _unified_status(db: Database, entity_id: str) -> tuple[str, str]:
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, legacy_status FROM unified_transactions WHERE id = :id"),
            {"id": entity_id},
        ).one()
    return row[0], row[1]


def _cashout_status(db: Database, legacy_id: int) -> str:
    with db.engine.connect() as conn:
        return str(
            conn.execute(
                sa.text("SELECT status FROM cashouts WHERE id = :id"), {"id": legacy_id}
            ).scalar_one()
        )


@contextmanager
def _a_legacy_write_as_retire_begins(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, str], int]]:
    """Seeded, frozen and archived; then, as the drop's revision begins, a cron job's raw
    UPDATE of a cashout's status (APPROVED to EXECUTING), committed once the drop waits
    for it (or for what it holds): what the drop's gates cannot see when they read the
    table. Yields the seeded ids and that cashout's legacy id."""
    ids = seed(db)
    freeze_and_archive(db, tmp_path)
    legacy_id = _cashout_of(db, ids["WALLET_CASHOUT2"])
    bypass = db.engine.connect()
    pid = int(bypass.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    bypass.rollback()

    def commit_once_retire_waits() -> None:
        wait_until_it_blocks(db.engine, pid)
        bypass.commit()

    committer = threading.Thread(target=commit_once_retire_waits)
    run_revision = schema.upgrade

    def bypass_write_then_upgrade(*args: object, **kwargs: object) -> object:
        bypass.execute(
            sa.text("UPDATE cashouts SET status = 'EXECUTING' WHERE id = :id"),
            {"id": legacy_id},
        )
        committer.start()
        return run_revision(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(schema, "upgrade", bypass_write_then_upgrade)
    try:
        yield ids, legacy_id
    finally:
        monkeypatch.undo()
        if committer.ident is not None:  # started: the revision began
            committer.join(30)
        bypass.close()


@pytest.mark.postgres
def test_a_bypass_write_committed_while_retire_runs_is_mirrored_not_lost(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With capture enabled a bypass write to a frozen legacy table is mirrored into its
    unified row (docs/capture.md). Retirement dropped the capture's legacy triggers in a
    transaction of its own before the drop's: a bypass write from then on was not
    mirrored, and one that committed after the drop's gates had read the table (no drift
    seen) went with the column, a lost write. The triggers now stay until the columns go,
    in the drop's own transaction."""
    capture.enable(pg.engine, pg.settings, actor="t", reason="t")
    try:
        with _a_legacy_write_as_retire_begins(pg, tmp_path, monkeypatch) as (ids, legacy_id):
            retire_legacy_columns(pg.engine, pg.settings, actor="t", reason="t")
        assert _unified_status(pg, ids["WALLET_CASHOUT2"]) == ("PROCESSING", "EXECUTING"), (
            "the bypass write was lost"
        )
        undo_cleanup(pg.engine, pg.settings)
        assert _cashout_status(pg, legacy_id) == "EXECUTING"
    finally:
        undo_cleanup(pg.engine, pg.settings)
        capture.disable(pg.engine, pg.settings, actor="t", reason="t")


@pytest.mark.postgres
def test_a_legacy_write_committed_while_retire_runs_is_seen_by_its_gates(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without capture a write to a frozen legacy table is not mirrored: the drop's gates
    refuse it (legacy_status_drift). One committed after the gates had read the table
    went with the column unseen. The drop now holds the legacy tables' writers (SHARE)
    before its gates: the write waits for it, or it for the write, and is seen."""
    _a_write_as_retire_begins_is_refused(pg, tmp_path, monkeypatch, pg.engine)


def _a_write_as_retire_begins_is_refused(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    """Retirement on ``engine`` refuses the legacy write that commits as it begins
    (legacy_status_drift), the columns and the write left as they are."""
    try:
        with _a_legacy_write_as_retire_begins(pg, tmp_path, monkeypatch) as (_, legacy_id):
            with pytest.raises(GateError, match="legacy_status_drift"):
                retire_legacy_columns(engine, pg.settings, actor="t", reason="t")
        assert all(status_columns(pg).values())
        assert _cashout_status(pg, legacy_id) == "EXECUTING"
    finally:
        undo_cleanup(pg.engine, pg.settings)


@pytest.mark.postgres
def test_retire_gives_up_on_a_legacy_writer_left_open_and_names_it(
    pg: Database, tmp_path: Path
) -> None:
    """A transaction that wrote a legacy table and stays open: the drop waits for it the
    polite way (its gates must see that write), then gives up naming it, nothing
    changed."""
    seed(pg)
    freeze_and_archive(pg, tmp_path)
    hurried = pg.settings.model_copy(update={"mode_lock_wait_seconds": 1.0})
    writer = pg.engine.connect()
    try:
        pid = int(writer.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        writer.exec_driver_sql("UPDATE escrows SET updated_at = updated_at WHERE id < 0")
        with pytest.raises(ModeLockBusyError) as refused:
            retire_legacy_columns(pg.engine, hurried, actor="t", reason="t")
        assert f"pid {pid} (" in str(refused.value) and "writes to" in str(refused.value)
        assert "nothing was changed" in str(refused.value)
        assert all(status_columns(pg).values())
    finally:
        writer.close()
        undo_cleanup(pg.engine, pg.settings)


@pytest.mark.postgres
def test_a_bypass_statement_in_flight_as_retire_begins_ends_first(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cron job's statement holds its table (ROW EXCLUSIVE) when the drop begins; its
    capture trigger will ask for the mode lock at the statement's end. Taken first, the
    mode lock then waited for the table: a deadlock, one side failed. The drop now takes
    both in one polite attempt: the statement ends, is mirrored, and the drop goes on."""
    queue_behind_any_holder(monkeypatch)  # the cron job's transaction opens first
    capture.enable(pg.engine, pg.settings, actor="t", reason="t")
    cron = pg.engine.connect()
    try:
        ids = seed(pg)
        freeze_and_archive(pg, tmp_path)
        legacy_id = _cashout_of(pg, ids["WALLET_CASHOUT2"])  # APPROVED
        pid = int(cron.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        # The statement under way: its table lock taken, its trigger not fired yet.
        cron.exec_driver_sql("LOCK TABLE cashouts IN ROW EXCLUSIVE MODE")
        with ThreadPoolExecutor(1) as pool:
            retiring = pool.submit(
                retire_legacy_columns, pg.engine, pg.settings, actor="t", reason="t"
            )
            assert wait_until_it_blocks(pg.engine, pid)
            time.sleep(1.5)  # past deadlock_timeout (1 s): a cycle would be found by now
            cron.execute(
                sa.text("UPDATE cashouts SET status = 'EXECUTING' WHERE id = :id"),
                {"id": legacy_id},
            )
            cron.commit()
            assert retiring.result(60)["dropped"]
        assert _unified_status(pg, ids["WALLET_CASHOUT2"]) == ("PROCESSING", "EXECUTING")
    finally:
        cron.close()
        undo_cleanup(pg.engine, pg.settings)
        capture.disable(pg.engine, pg.settings, actor="t", reason="t")


@pytest.mark.postgres
def test_a_bypass_write_right_after_the_undo_is_mirrored(pg: Database, tmp_path: Path) -> None:
    """The undo installed the capture's legacy triggers again in a transaction of its
    own, after its commit (and behind the detector's re-install, which waits for every
    reader of unified): a bypass write to the restored column in between was not
    mirrored. They now come back in the undo's own transaction."""
    capture.enable(pg.engine, pg.settings, actor="t", reason="t")
    reader = pg.engine.connect()
    try:
        ids = seed(pg)
        freeze_and_archive(pg, tmp_path)
        legacy_id = _cashout_of(pg, ids["WALLET_CASHOUT2"])  # APPROVED
        retire_legacy_columns(pg.engine, pg.settings, actor="t", reason="t")
        reader.exec_driver_sql("SELECT 1 FROM unified_transactions LIMIT 1")  # a report

        def write_once_the_column_is_back() -> None:
            try:
                with pg.engine.connect() as cron:
                    until = time.monotonic() + 20
                    while time.monotonic() < until and not all(status_columns(pg).values()):
                        time.sleep(0.01)
                    cron.execute(
                        sa.text("UPDATE cashouts SET status = 'EXECUTING' WHERE id = :id"),
                        {"id": legacy_id},
                    )
                    cron.commit()
            finally:
                reader.rollback()  # the report ends

        with ThreadPoolExecutor(1) as pool:
            cron = pool.submit(write_once_the_column_is_back)
            undo_cleanup(pg.engine, pg.settings)
            cron.result(30)
        assert _unified_status(pg, ids["WALLET_CASHOUT2"]) == ("PROCESSING", "EXECUTING"), (
            "not mirrored"
        )
    finally:
        reader.close()
        undo_cleanup(pg.engine, pg.settings)
        capture.disable(pg.engine, pg.settings, actor="t", reason="t")


@pytest.mark.postgres
def test_capture_enabled_as_a_retirement_commits_reads_the_tables_after_it(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`capture enable` the first time (nothing installed to drop, so nothing to wait for
    before it read the tables) beside a retirement: it read the columns as they were
    before the drop committed, then, once the drop let it, installed triggers that read
    a dropped column: every later write to that table failed. It now reads the tables
    once it holds them."""
    import unistatus.migration.retire as retire_module

    seed(pg)
    freeze_and_archive(pg, tmp_path)
    dropped, go_on = threading.Event(), threading.Event()
    run_after = retire_module._after_the_drop

    def after_and_wait(conn: sa.Connection) -> None:
        run_after(conn)
        dropped.set()
        go_on.wait(20)  # the columns dropped, not committed yet

    monkeypatch.setattr(retire_module, "_after_the_drop", after_and_wait)
    try:
        with ThreadPoolExecutor(2) as pool:
            try:
                retiring = pool.submit(
                    retire_legacy_columns, pg.engine, pg.settings, actor="t", reason="t"
                )
                assert dropped.wait(20)
                enabling = pool.submit(
                    capture.enable, pg.engine, pg.settings, actor="t", reason="t"
                )
                time.sleep(1.0)  # enable at work, waiting for the drop's locks
            finally:
                go_on.set()
            assert retiring.result(30)["dropped"]
            enabling.result(30)
        with pg.engine.begin() as conn:  # an application's write to the table
            conn.exec_driver_sql("UPDATE cashouts SET amount = amount WHERE id > 0")
    finally:
        monkeypatch.undo()
        undo_cleanup(pg.engine, pg.settings)
        capture.disable(pg.engine, pg.settings, actor="t", reason="t")


@pytest.mark.postgres
def test_retire_on_a_repeatable_read_engine_sees_a_write_committed_while_it_waits(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine (or a server, a role) whose transactions default to REPEATABLE READ:
    the drop's transaction took its snapshot at its first statement, before it waited
    for the legacy tables' writers, so its gates read the tables as they were before a
    write that committed meanwhile, and the column went with that write. The package's
    write transactions are now READ COMMITTED whatever the default."""
    engine = create_engine(at_repeatable_read(pg.url), schema=pg.settings.schema)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar_one() == (
                "repeatable read"
            )
        _a_write_as_retire_begins_is_refused(pg, tmp_path, monkeypatch, engine)
    finally:
        engine.dispose()


def test_after_the_drop_the_cli_says_what_was_retired_not_orphaned(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """Following the runbook (exploratory review): after the drop, `tx show` said
    INCONSISTENT / orphan_unified for a transaction whose legacy row is still there,
    `check` failed with "has no column 'status' (configured as status)" as if the config
    were wrong, and the printed undo line lacked the --reason it requires."""
    db = sqlite_db
    ids = seed(db)
    freeze_and_archive(db, tmp_path)
    runner = CliRunner()
    url = ["--database-url", db.url]
    done = runner.invoke(app, [*url, "retire", "legacy-columns", "--reason", "phase 4"])
    assert done.exit_code == 0, done.output
    assert "retire legacy-columns --undo --reason" in " ".join(done.output.split())

    entity = ids["ESCROW0"]
    shown = runner.invoke(app, [*url, "tx", "show", entity])
    assert shown.exit_code == 0, shown.output
    assert "orphan" not in shown.output and "INCONSISTENT" not in shown.output
    assert "retired" in shown.output
    as_json = json.loads(runner.invoke(app, [*url, "tx", "show", entity, "--json"]).stdout)
    assert as_json["consistent"] is None and as_json["inconsistencies"] == []
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    with pytest.raises(ConfigError, match="retired"):
        adapter.check_consistency(entity)

    check = runner.invoke(app, [*url, "check"])
    assert check.exit_code == 2, check.output
    said = " ".join(check.output.split())
    assert "retire legacy-columns" in said and "--undo" in said, said


def test_an_undo_with_a_legacy_row_whose_unified_row_is_gone_says_so(
    retirable: Database,
) -> None:
    """The refill takes each legacy row's status from its unified row: one deleted
    since the retirement (a `backfill undo` in phase 4 deleted 499,999 of them) was
    refilled NULL and the undo said only "restored", exit 0 (found by a probe). It goes
    on (a rollback out of phase 4 is never blocked; a row inserted behind unistatus
    while retired never had a status) and says how many rows of which table it left
    NULL, in its notes and the log."""
    db = retirable
    retire_legacy_columns(db.engine, db.settings, actor="test")
    U = unified_transactions
    with db.engine.begin() as conn:
        escrows = U.c.legacy_system == "ESCROW"
        gone = conn.execute(sa.select(U.c.id).where(escrows).order_by(U.c.id).limit(2))
        conn.execute(sa.delete(U).where(U.c.id.in_(list(gone.scalars()))))
    undone = undo_cleanup(db.engine, db.settings, actor="test")
    assert undone["undone"] and all(status_columns(db).values())
    said = [n for n in undone["notes"] if "have no unified row" in n]
    assert len(said) == 1 and said[0].startswith("2 legacy rows of escrows"), undone["notes"]
    with db.engine.connect() as conn:
        nulls = conn.execute(sa.text("SELECT count(*) FROM escrows WHERE status IS NULL"))
        assert nulls.scalar_one() == 2


def test_init_on_a_retired_database_says_what_it_upgraded(retirable: Database) -> None:
    """With the legacy status columns retired, `init` compared revision 0006 (what
    current_revision says then) before and after: an upgrade of the main chain was
    reported "already at revision 0006 (nothing to do)", `"upgraded": false` (a probe)."""
    db = retirable
    retire_legacy_columns(db.engine, db.settings, actor="test")
    main, _ = schema.head_revisions()
    earlier = schema._scripts().get_revision(main).down_revision
    schema.downgrade(db.engine, db.settings, f"{main}-1")
    assert sorted(schema.current_heads(db.engine)) == sorted([earlier, schema.RETIRE_REVISION])
    r = CliRunner().invoke(app, ["--database-url", db.url, "init", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["previous_revision"], out["revision"], out["upgraded"]) == (earlier, main, True)
    assert sorted(schema.current_heads(db.engine)) == sorted([main, schema.RETIRE_REVISION])
    text = CliRunner().invoke(app, ["--database-url", db.url, "init"])
    assert f"already at revision {main}" in text.stdout, text.stdout
