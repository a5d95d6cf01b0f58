"""One system at a time (issue 14 §1): each legacy system follows its own mode in the
adapter, the replay and the emergency rollback; a switch of one system waits for that
system's writers only, and the other systems' writers never see a failure."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from support.phases import to_phase
from unistatus import DualWriteAdapter
from unistatus.adapter.model import OperationEvent
from unistatus.cli import app
from unistatus.db.control import get_mode, get_modes, history, set_mode
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.domain.statuses import LegacySystemType as S
from unistatus.migration.check import run_check
from unistatus.migration.replay import pending_count
from unistatus.migration.rollback import emergency_rollback
from unistatus.sim.traffic import run_traffic

U = unified_transactions
TYPES = {S.CASHOUT: "WALLET_CASHOUT", S.ESCROW: "ESCROW", S.EXCHANGE: "EXCHANGE"}
NEXT = {S.CASHOUT: "PROCESSING", S.ESCROW: "CANCELLED", S.EXCHANGE: "CANCELLED"}


def adapter_of(db: Database) -> DualWriteAdapter:
    settings = db.settings.model_copy(update={"mode_refresh_seconds": 0.1})
    return DualWriteAdapter(db.engine, settings=settings, record_stats=False)


def set_modes(db: Database, modes: dict[S, M]) -> None:
    for system, mode in modes.items():
        set_mode(db.engine, mode, system=system, reason="test", force=True, settings=db.settings)


class Outcomes:
    """The adapter's operations per system, as its observers see them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: Counter[S | None] = Counter()
        self.failed: Counter[S | None] = Counter()
        self.errors: list[str] = []

    def __call__(self, event: OperationEvent) -> None:
        with self.lock:
            self.done[event.system] += 1
            if not event.success:
                self.failed[event.system] += 1
                self.errors.append(f"{event.system}: {event.error}")

    def wait_for(self, more: int, deadline_s: float = 30.0) -> None:
        """Until ``more`` further operations of every system have been seen."""
        with self.lock:
            target = {s: self.done[s] + more for s in S}
        deadline = time.monotonic() + deadline_s
        while True:
            with self.lock:
                if all(self.done[s] >= n for s, n in target.items()):
                    return
            assert time.monotonic() < deadline, f"traffic stalled: {dict(self.done)}"
            time.sleep(0.01)


@contextmanager
def live_traffic(adapter: DualWriteAdapter, seed: int) -> Iterator[tuple[Outcomes, list[Any]]]:
    """Four threads of traffic on every system through ``adapter`` while the block runs:
    its outcomes per system and, once stopped, the traffic's report."""
    seen = Outcomes()
    adapter.observers.append(seen)
    stop = threading.Event()
    reports: list[Any] = []
    traffic = threading.Thread(
        target=lambda: reports.append(
            run_traffic(adapter, threads=4, seconds=None, stop=stop, new_ratio=0.4, seed=seed)
        )
    )
    traffic.start()
    try:
        yield seen, reports
    finally:
        stop.set()
        traffic.join(60)
    assert not traffic.is_alive()


def fully_consistent(db: Database, *systems: S) -> None:
    report = run_check(db.engine, db.settings, systems=list(systems) or None, store=False)
    assert report.total > 0 and report.consistent == report.total, report.as_dict()


def born_unified(db: Database, system: S) -> int:
    """Unified rows of ``system`` without a legacy row (created in UNIFIED_ONLY)."""
    with db.engine.connect() as conn:
        q = sa.select(sa.func.count()).where(U.c.legacy_system == system.value)
        return int(conn.execute(q.where(U.c.legacy_id.is_(None))).scalar_one())


def test_three_systems_in_three_modes_under_live_traffic(pg: Database) -> None:
    """Cashouts UNIFIED_ONLY, escrows DUAL_WRITE_UNIFIED_PRIMARY, exchanges
    DUAL_WRITE_LEGACY_PRIMARY, written from six threads at once: each system's rows
    end as its mode says, and the emergency rollback of cashouts replays theirs."""
    set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    set_modes(
        pg,
        {
            S.CASHOUT: M.UNIFIED_ONLY,
            S.ESCROW: M.DUAL_WRITE_UNIFIED_PRIMARY,
            S.EXCHANGE: M.DUAL_WRITE_LEGACY_PRIMARY,
        },
    )
    adapter = adapter_of(pg)
    seen = Outcomes()
    adapter.observers.append(seen)
    report = run_traffic(adapter, threads=6, operations=600, new_ratio=0.4, seed=14)
    assert report.errors == 0, report.error_samples
    assert min(seen.done[s] for s in S) > 15, seen.done
    assert sum(seen.failed.values()) == 0, seen.errors
    # Each write was made under its own system's mode.
    with pg.engine.connect() as conn:
        P = pending_legacy_changes
        pending_systems = set(
            conn.execute(
                sa.select(U.c.legacy_system)
                .distinct()
                .select_from(P.join(U, U.c.id == P.c.transaction_id))
                .where(P.c.replayed_at.is_(None))
            ).scalars()
        )
    assert pending_systems == {"CASHOUT"}  # legacy frozen for cashouts only
    assert born_unified(pg, S.CASHOUT) > 0
    assert born_unified(pg, S.ESCROW) == born_unified(pg, S.EXCHANGE) == 0
    fully_consistent(pg, S.ESCROW, S.EXCHANGE)

    before = pending_count(pg.engine, S.CASHOUT)
    assert before > 0
    result = emergency_rollback(
        pg.engine, pg.settings, actor="oncall", reason="drill", system=S.CASHOUT
    )
    assert result["replay"]["replayed"] == before and result["conflicts"] == 0
    assert pending_count(pg.engine) == 0 and born_unified(pg, S.CASHOUT) == 0
    assert get_modes(pg.engine) == {
        S.CASHOUT: M.LEGACY_ONLY,
        S.ESCROW: M.DUAL_WRITE_UNIFIED_PRIMARY,
        S.EXCHANGE: M.DUAL_WRITE_LEGACY_PRIMARY,
    }
    fully_consistent(pg)  # nothing lost: every system's legacy rows agree with unified


def frozen_writes(db: Database, adapter: DualWriteAdapter, system: S, n: int) -> list[str]:
    """``n`` transactions of ``system`` created and moved on while legacy is frozen."""
    ids = []
    for i in range(n):
        r = adapter.create_transaction(TYPES[system], 100 + i, "5", "USD")
        assert r.overall_success and r.mode is M.UNIFIED_ONLY, r
        assert r.entity_id is not None
        ids.append(r.entity_id)
    for utx in ids[::2]:
        assert adapter.update_status(utx, NEXT[system], "go", "test").overall_success
    return ids


def test_an_emergency_rollback_of_one_system_replays_only_its_changes(db: Database) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    set_modes(db, {S.CASHOUT: M.UNIFIED_ONLY, S.ESCROW: M.UNIFIED_ONLY})
    adapter = adapter_of(db)
    frozen_writes(db, adapter, S.CASHOUT, 6)
    escrows = frozen_writes(db, adapter, S.ESCROW, 4)
    exchange = adapter.create_transaction("EXCHANGE", 7, "5", "USD")
    assert exchange.overall_success and exchange.mode is M.DUAL_WRITE_LEGACY_PRIMARY
    assert pending_count(db.engine, S.CASHOUT) == 9 and pending_count(db.engine, S.ESCROW) == 6
    logged = len(history(db.engine))

    result = emergency_rollback(db.engine, db.settings, actor="oncall", reason="t", system="escrow")
    assert (result["system"], result["from_mode"], result["to_mode"]) == (
        "ESCROW",
        "UNIFIED_ONLY",
        "LEGACY_ONLY",
    )
    assert result["replay"]["replayed"] == 6 and result["conflicts"] == 0
    assert "backfill of ESCROW paused (CASHOUT, EXCHANGE's goes on)" in result["notes"]
    assert pending_count(db.engine, S.ESCROW) == 0
    assert pending_count(db.engine, S.CASHOUT) == 9  # cashouts: untouched, still frozen
    assert get_modes(db.engine) == {
        S.CASHOUT: M.UNIFIED_ONLY,
        S.ESCROW: M.LEGACY_ONLY,
        S.EXCHANGE: M.DUAL_WRITE_LEGACY_PRIMARY,
    }
    # Logged: escrow's mode and phase (0, as LEGACY_ONLY is), the rollback, the pause of
    # escrow's backfill; nothing else.
    new = [c.key for c in history(db.engine)[: len(history(db.engine)) - logged]]
    assert sorted(new) == [
        "backfill.paused.ESCROW",
        "last_rollback",
        "mode.ESCROW",
        "phase.ESCROW",
    ]
    fully_consistent(db, S.ESCROW)
    # A running adapter sees a switch within its refresh interval (about a second): reads
    # follow the cached mode until then, so the test refreshes rather than races it.
    adapter.modes.refresh(S.ESCROW)
    status, meta = adapter.get_transaction_status(escrows[0])
    assert status is not None and meta["source"] == "legacy"  # escrows read legacy again
    assert adapter.create_transaction("ESCROW", 9, "1", "USD").mode is M.LEGACY_ONLY
    assert adapter.create_transaction("WALLET_CASHOUT", 9, "1", "USD").mode is M.UNIFIED_ONLY

    # Then cashouts, and every system is in step with nothing lost.
    result = emergency_rollback(
        db.engine, db.settings, actor="oncall", reason="t", system="cashout"
    )
    assert result["replay"]["replayed"] == 10 and pending_count(db.engine) == 0
    assert "backfill of CASHOUT paused (EXCHANGE's goes on)" in result["notes"]
    # Once every system's is paused, none is said to go on (a probe: after a rollback of
    # every system, one system's said the others' went on).
    emergency_rollback(db.engine, db.settings, actor="oncall", reason="t", system="exchange")
    again = emergency_rollback(db.engine, db.settings, actor="oncall", reason="t", system="escrow")
    assert "backfill of ESCROW paused (the other systems' was paused already)" in again["notes"]
    # Every system in step, but the escrow created above in LEGACY_ONLY (no unified row,
    # as in any legacy-only period, until the backfill).
    fully_consistent(db, S.CASHOUT, S.EXCHANGE)
    escrow_check = run_check(db.engine, db.settings, systems=[S.ESCROW], store=False)
    assert escrow_check.inconsistent == escrow_check.inconsistencies["missing_unified"] == 1


def test_the_other_systems_writers_never_fail_while_one_system_switches(pg: Database) -> None:
    """Live traffic on every system while cashouts go to UNIFIED_ONLY and back by the
    emergency rollback (with its replay), three times: escrow and exchange writes all
    succeed (and so do cashouts': a write racing a switch waits for it)."""
    set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    with live_traffic(adapter_of(pg), seed=3) as (seen, reports):
        for _ in range(3):
            seen.wait_for(20)
            set_mode(
                pg.engine,
                M.UNIFIED_ONLY,
                system=S.CASHOUT,
                reason="wk 3",
                force=True,
                settings=pg.settings,
            )
            seen.wait_for(20)
            emergency_rollback(pg.engine, pg.settings, actor="t", reason="t", system=S.CASHOUT)
            seen.wait_for(10)
            set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, system=S.CASHOUT, reason="again")
        seen.wait_for(10)
    assert seen.failed[S.ESCROW] == seen.failed[S.EXCHANGE] == 0, seen.errors
    assert seen.failed[S.CASHOUT] == 0, seen.errors
    assert reports and reports[0].errors == 0, reports[0].error_samples
    assert get_mode(pg.engine, S.ESCROW) is get_mode(pg.engine, S.EXCHANGE)
    assert pending_count(pg.engine) == 0  # every frozen cashout change is in legacy
    fully_consistent(pg, S.ESCROW, S.EXCHANGE)
    # Cashouts spent moments in LEGACY_ONLY (after each emergency rollback): their
    # legacy-only writes are not in unified, as in any legacy-only period, until a
    # check and repair (the gate into unified reads refuses until then).
    cashouts = run_check(pg.engine, pg.settings, systems=[S.CASHOUT], store=False)
    kinds = {k for k, n in cashouts.inconsistencies.items() if n}
    assert kinds <= {"missing_unified", "status_mismatch", "legacy_status_drift"}, kinds


def test_the_other_systems_writers_never_fail_while_one_system_rolls_back_a_phase(
    pg: Database,
) -> None:
    """Live traffic on every system (all in phase 3) while escrows enter phase 4 and go
    back by `phase rollback --system escrow` (its replay of escrows' changes), twice:
    every write succeeds, cashouts and exchanges stay in phase 3, nothing is lost."""
    from unistatus.migration.phases import advance, read_phases
    from unistatus.migration.rollback import rollback_current_phase

    to_phase(pg.engine, 3)
    replayed = 0
    with live_traffic(adapter_of(pg), seed=5) as (seen, reports):
        for _ in range(2):
            seen.wait_for(20)
            advance(pg.engine, pg.settings, actor="t", reason="t", force=True, system=S.ESCROW)
            seen.wait_for(30)
            change = rollback_current_phase(
                pg.engine, pg.settings, actor="t", reason="t", system=S.ESCROW
            )
            assert (change.from_phase, change.to_phase) == (4, 2)
            replayed += change.details["replay"]["replayed"]
            seen.wait_for(10)
            advance(pg.engine, pg.settings, actor="t", reason="t", force=True, system=S.ESCROW)
        seen.wait_for(10)
    assert sum(seen.failed.values()) == 0, seen.errors
    assert reports and reports[0].errors == 0, reports[0].error_samples
    assert replayed > 0 and pending_count(pg.engine) == 0
    with pg.engine.connect() as conn:
        assert read_phases(conn) == dict.fromkeys(S, 3)
    fully_consistent(pg)  # escrows' frozen changes all reached legacy


ADVISORY_WAITERS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the assertions
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_a_switch_waits_for_its_own_systems_caller_transaction_only(pg: Database) -> None:
    set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    adapter = adapter_of(pg)
    with pg.engine.connect() as caller:
        tx = caller.begin()
        r = adapter.create_transaction("ESCROW", 1, "5", "USD", connection=caller)
        assert r.overall_success and r.mode is M.DUAL_WRITE_LEGACY_PRIMARY
        # Cashouts switch at once, escrow's open transaction notwithstanding.
        cashout, out = in_thread(
            lambda: set_mode(pg.engine, M.LEGACY_ONLY, system=S.CASHOUT, reason="t")
        )
        cashout.join(20)
        assert not cashout.is_alive() and "error" not in out, out
        # Escrows wait for it: the switch queues on escrow's mode lock.
        escrow, out = in_thread(
            lambda: set_mode(pg.engine, M.LEGACY_ONLY, system=S.ESCROW, reason="t")
        )
        deadline = time.monotonic() + 20
        with pg.engine.connect() as watcher:
            while watcher.execute(sa.text(ADVISORY_WAITERS)).scalar_one() < 1:
                assert time.monotonic() < deadline, "the escrow switch never waited"
                time.sleep(0.01)
        assert escrow.is_alive() and get_mode(pg.engine, S.ESCROW) is M.DUAL_WRITE_LEGACY_PRIMARY
        # Meanwhile exchanges are written, in their own transactions, without waiting.
        done = adapter.create_transaction("EXCHANGE", 2, "5", "USD")
        assert done.overall_success and done.mode is M.DUAL_WRITE_LEGACY_PRIMARY
        tx.commit()
    escrow.join(20)
    assert not escrow.is_alive() and "error" not in out, out
    assert get_modes(pg.engine) == {
        S.CASHOUT: M.LEGACY_ONLY,
        S.ESCROW: M.LEGACY_ONLY,
        S.EXCHANGE: M.DUAL_WRITE_LEGACY_PRIMARY,
    }
    with pg.engine.connect() as conn:  # the escrow written before the switch is kept
        q = sa.select(sa.func.count()).where(U.c.legacy_system == "ESCROW")
        assert conn.execute(q).scalar_one() == 1


def test_rollback_emergency_for_one_system_on_the_command_line(db: Database) -> None:
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, ["--database-url", db.url, *args], catch_exceptions=False)

    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    set_modes(db, {S.EXCHANGE: M.UNIFIED_ONLY})
    adapter = adapter_of(db)
    frozen_writes(db, adapter, S.EXCHANGE, 2)
    refused = run(
        "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--system", "exchange", "--reason", "x"
    )
    assert (
        refused.exit_code == 2 and "3 change(s) made in UNIFIED_ONLY (EXCHANGE)" in refused.stderr
    )
    assert "rollback --emergency --system exchange" in " ".join(refused.stderr.split())
    no_reason = run("rollback", "--emergency", "--system", "exchange")
    assert no_reason.exit_code == 2
    bad = run("rollback", "--emergency", "--system", "bank", "--reason", "x")
    assert bad.exit_code == 2 and "unknown legacy system 'bank'" in bad.stderr
    done = run("rollback", "--emergency", "--system", "EXCHANGE", "--reason", "drill", "--json")
    assert done.exit_code == 0, done.output
    body = json.loads(done.stdout)
    assert (body["system"], body["to_mode"], body["replay"]["replayed"]) == (
        "EXCHANGE",
        "LEGACY_ONLY",
        3,
    )
    shown = json.loads(run("mode", "get", "--json").stdout)
    assert shown == {
        "mode": "mixed",
        "systems": {
            "CASHOUT": "DUAL_WRITE_LEGACY_PRIMARY",
            "ESCROW": "DUAL_WRITE_LEGACY_PRIMARY",
            "EXCHANGE": "LEGACY_ONLY",
        },
    }
    text = run("rollback", "--emergency", "--system", "exchange", "--reason", "again")
    assert (
        text.exit_code == 0
        and "emergency rollback: EXCHANGE: phase 0 -> 0, mode LEGACY_ONLY" in text.stdout
    )
    fully_consistent(db, S.EXCHANGE)


def test_the_api_switches_and_rolls_back_one_system(db: Database) -> None:
    from fastapi.testclient import TestClient

    from unistatus.api.service import create_app

    token = "admin-token-for-this-test"
    service = create_app(db.settings.model_copy(update={"admin_token": token}), db.engine)
    headers = {"Authorization": f"Bearer {token}"}
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    with TestClient(service) as client:
        body = {"mode": "UNIFIED_ONLY", "system": "CASHOUT", "reason": "wk 3", "force": True}
        r = client.put("/api/v1/control/mode", json=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["systems_changed"] == ["CASHOUT"]
        assert get_mode(db.engine, S.CASHOUT) is M.UNIFIED_ONLY
        frozen_writes(db, adapter_of(db), S.CASHOUT, 1)
        body = {"system": "CASHOUT", "reason": "drill"}
        r = client.post("/api/v1/control/rollback", json=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["replay"]["replayed"] == 2 and r.json()["system"] == "CASHOUT"
    assert get_modes(db.engine) == {
        S.CASHOUT: M.LEGACY_ONLY,
        S.ESCROW: M.DUAL_WRITE_LEGACY_PRIMARY,
        S.EXCHANGE: M.DUAL_WRITE_LEGACY_PRIMARY,
    }
