"""examples/payments_service, run through the whole migration (issue 12, section 5).

A service with legacy tables of its own (a required extra column each), a ledger, money
moved in the same transaction as each status change, and a nightly job that writes the
legacy table with raw SQL. It goes from LEGACY_ONLY to UNIFIED_ONLY through the gates
(never forced), then back with a rollback and its replay, on a database of its own per
backend; at each check both sides agree, the money adds up, and nothing the service
wrote is lost.

Capture is enabled right after ``init``: the raw-SQL job keeps running through phases
1 and 2 and its writes are brought in step by the database (every check agrees, no
repair); it is converted before the soak of phase 3, and the gate into phase 4 passes
because no bypass write happened since unified became primary.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import Database, _drop_database, _throwaway_database
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.backfill.runner import run_backfill
from unistatus.clock import utcnow
from unistatus.config import CONFIG_FILE_ENV, Settings, load_settings
from unistatus.db import schema
from unistatus.db.engine import create_engine
from unistatus.migration import capture, phases
from unistatus.migration.check import run_check
from unistatus.migration.phases import phase_started_at, read_phase
from unistatus.migration.rollback import rollback_current_phase

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payments_service"
sys.path.insert(0, str(EXAMPLE))

from payments_service import cron  # noqa: E402
from payments_service.models import Account, Base, Cashout, LedgerEntry  # noqa: E402
from payments_service.service import InsufficientFunds, PaymentsService  # noqa: E402

START = Decimal("1000")
USERS = (1, 2, 3, 4)


def settings_for(url: str) -> Settings:
    """The example's own unistatus.toml, with a soak time a test can wait out (and the
    p95 gate into phase 4 judging the few operations that soak holds)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(CONFIG_FILE_ENV, str(EXAMPLE / "unistatus.toml"))
        settings = load_settings(database_url=url, soak_seconds=1, p95_gate_min_operations=5)
    assert settings.mapping == {"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}}
    return settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database with nothing in it: the service creates its tables, then unistatus."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'payments.db'}"
        engine = create_engine(url)
        yield Database("sqlite", url, engine, settings_for(url))
        engine.dispose()
        return
    admin, url, name = _throwaway_database("_example")
    engine = create_engine(url)
    try:
        yield Database("postgres", url, engine, settings_for(url))
    finally:
        engine.dispose()
        _drop_database(admin, name)


class World:
    """The service, its adapter, and what the test expects of them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        Base.metadata.create_all(db.engine)  # the service's own schema, as it always was
        schema.upgrade(db.engine, db.settings)  # `unistatus init`
        capture.enable(db.engine, db.settings, actor="example", reason="the nightly job")
        self.adapter = DualWriteAdapter(db.engine, settings=db.settings)
        self.service = PaymentsService(db.engine, self.adapter)
        for user in USERS:
            self.service.open_account(user, START)
        self.expected: dict[str, str] = {}  # transaction id -> unified status
        self.round = 0

    def business(self) -> None:
        """One round of what the service does all day, in whatever mode is on."""
        self.round += 1
        r, s = self.round, self.service
        paid = s.request_cashout(1, Decimal("10.5"), "USDT", f"TRX-wallet-{r}")
        s.approve_cashout(paid)
        s.complete_cashout(paid)
        self.expected[paid] = "SUCCESS"
        failed = s.request_cashout(2, Decimal("7"), "USDT", f"TRX-other-{r}")
        s.approve_cashout(failed)
        s.fail_cashout(failed, 2, Decimal("7"))
        self.expected[failed] = "FAILED"
        withdrawn = s.request_cashout(2, Decimal("3"), "USDT", f"TRX-oops-{r}")
        s.refund_cashout(withdrawn, 2, Decimal("3"))
        self.expected[withdrawn] = "CANCELLED"
        waiting = s.request_cashout(3, Decimal("1.25"), "USDT", f"TRX-slow-{r}")
        self.expected[waiting] = "PENDING"
        escrow = s.open_escrow(3, 4, Decimal("20"), "USDT")
        s.fund_escrow(escrow, 3, Decimal("20"))
        s.release_escrow(escrow, 4, Decimal("20"))
        self.expected[escrow] = "SUCCESS"
        exchange = s.open_exchange(4, Decimal("5"), "USDT", "BTC/USDT")
        s.settle_exchange(exchange, 4, Decimal("5"))
        self.expected[exchange] = "SUCCESS"
        # A refused business operation leaves nothing behind: not the debit, not the row.
        with pytest.raises(InsufficientFunds):
            s.request_cashout(1, Decimal("1000000"), "USDT", "TRX-too-much")

    def expire_by_adapter(self) -> None:
        cron.expire_stale_cashouts(self.db.engine, self.adapter, utcnow() + timedelta(seconds=1))
        self._pending_expired()

    def expire_by_raw_sql(self) -> None:
        cron.expire_stale_cashouts_sql(self.db.engine, utcnow() + timedelta(seconds=1))
        self._pending_expired()

    def _pending_expired(self) -> None:
        for tx, status in self.expected.items():
            if status == "PENDING":
                self.expected[tx] = "EXPIRED"

    def raw_job_writer(self) -> str:
        """The name the capture gives the nightly job (its connection's application
        name and login role; SQLite has neither)."""
        if self.db.backend == "sqlite":
            return "bypass:sqlite"
        with self.db.engine.connect() as conn:
            name = conn.scalar(sa.text("SELECT current_setting('application_name')"))
            return f"bypass:{name}/{conn.scalar(sa.text('SELECT session_user'))}"

    def advance(self, reason: str) -> None:
        """Into the next phase through its gates, never forced."""
        assert self.adapter.stats is not None
        self.adapter.stats.flush()
        status = phases.phase_status(self.db.engine, self.db.settings)
        failing = [g.as_dict() for g in status.gates if not g.passed]
        assert not failing, failing
        phases.advance(self.db.engine, self.db.settings, actor="example", reason=reason)
        self.adapter.modes.refresh()

    def full_check(self, since: object = None) -> None:
        report = run_check(self.db.engine, self.db.settings, since=since, examples=3)
        assert report.consistent == report.total, (report.inconsistencies, report.examples)

    def statuses_as_written(self) -> None:
        for tx, want in self.expected.items():
            status, meta = self.adapter.get_transaction_status(tx)
            assert status is not None and status.value == want, (tx, want, meta)

    def money_adds_up(self) -> None:
        with self.db.engine.connect() as conn:
            balances = dict(conn.execute(sa.select(Account.user_id, Account.balance)).all())
            moved = dict(
                conn.execute(
                    sa.select(LedgerEntry.user_id, sa.func.sum(LedgerEntry.amount)).group_by(
                        LedgerEntry.user_id
                    )
                ).all()
            )
        for user in USERS:
            assert balances[user] == START + Decimal(moved.get(user, 0)), user


def soaked(engine: sa.Engine) -> float:
    started = phase_started_at(engine, 3)
    assert started is not None
    return (utcnow() - started).total_seconds()


def test_the_payments_service_migrates_through_all_four_phases_and_back(
    fresh: Database,
) -> None:
    world = World(fresh)
    engine = fresh.engine
    try:
        # Phase 0: the service as it runs today (the adapter in LEGACY_ONLY).
        world.business()
        world.expire_by_raw_sql()
        world.business()
        assert world.adapter.mode is DualWriteMode.LEGACY_ONLY

        # Phases 1 and 2: the nightly job still raw SQL, captured: no repair needed.
        world.advance("phase 1: dual writes, legacy primary")
        world.business()
        world.expire_by_raw_sql()
        world.full_check(since=phase_started_at(engine, 1))
        world.statuses_as_written()

        world.advance("phase 2: backfill")
        report = run_backfill(engine, fresh.settings, batch_size=7)
        assert report.as_dict()["quarantined"] == 0
        world.business()
        world.expire_by_raw_sql()
        world.full_check()
        world.statuses_as_written()
        job = world.raw_job_writer()
        (seen,) = capture.status(engine, fresh.settings).writers
        assert (seen.writer, seen.system) == (job, "CASHOUT") and seen.writes > 0

        # Phase 3: the job converted (through the adapter) before the soak.
        world.advance("phase 3: unified primary")
        world.business()
        world.expire_by_adapter()
        world.full_check()
        time.sleep(max(0.0, fresh.settings.soak_seconds - soaked(engine)))
        # The gate into 4 passes because the capture saw no bypass write in the soak
        # (not because it could not see: capture is on), though it saw the raw job
        # before it.
        gates = {g.name: g for g in phases.phase_status(engine, fresh.settings).gates}
        gate = gates[phases.BYPASS_GATE]
        assert gate.passed and gate.value == 0 and (gate.detail or "").startswith("none since")
        started = phase_started_at(engine, 3)
        assert seen.last_seen_at is not None and started is not None
        assert capture.writers_seen(engine, since=started) == []
        assert seen.last_seen_at < started
        world.advance("phase 4: unified only")
        assert world.adapter.mode is DualWriteMode.UNIFIED_ONLY
        world.business()  # creates with legacy_values too: kept for the replay
        world.expire_by_adapter()
        world.statuses_as_written()
        world.money_adds_up()

        # Back out of phase 4: the replay writes every change (and every cashout created
        # in UNIFIED_ONLY, with its destination) to legacy; both sides agree again.
        back = rollback_current_phase(engine, fresh.settings, actor="example", reason="drill")
        assert back.details["replay"]["conflicts"] == 0, back.details
        world.adapter.modes.refresh()
        assert world.adapter.mode is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
        with engine.connect() as conn:
            assert read_phase(conn) == 2  # phase 4 steps back to legacy primary
            assert conn.scalar(sa.select(sa.func.count()).where(Cashout.destination.is_(None))) == 0
        world.full_check()
        world.business()
        world.statuses_as_written()
        world.money_adds_up()
    finally:
        world.adapter.close()


@pytest.mark.postgres
def test_the_converted_job_finds_unistatus_in_a_schema_of_its_own(pg_schema: Database) -> None:
    """It read unified_transactions on the application's engine, where a `schema =
    "unistatus"` installation is not: ProgrammingError (found by a probe)."""
    from unistatus.db.control import set_mode  # noqa: PLC0415

    set_mode(pg_schema.engine, DualWriteMode.UNIFIED_ONLY, reason="t", actor="t", force=True)
    app = sa.create_engine(pg_schema.url)
    adapter = DualWriteAdapter(app, settings=pg_schema.settings, record_stats=False)
    try:
        made = adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert made.overall_success, made.as_dict()
        later = utcnow() + timedelta(minutes=1)
        assert cron.expire_stale_cashouts(app, adapter, older_than=later) == 1
        assert adapter.get_transaction_status(made.entity_id)[0] == "EXPIRED"
    finally:
        adapter.close()
        app.dispose()
