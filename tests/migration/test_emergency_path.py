"""Issue 10, section 5: the emergency path always wins.

- ``rollback --emergency`` racing ``phase advance --force`` ends in phase 0 (it reads
  the phase under the exclusive mode lock), on both backends, several times over.
- The replay never waits unbounded while it holds the mode lock: a legacy row locked
  elsewhere neither stalls writers nor the rollback (it becomes a conflict), and a
  killed rollback's server session lets the mode lock go.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.db.control import get_mode, history
from unistatus.db.mode_lock_keys import MODE_LOCK_KEY
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration import phases, rollback
from unistatus.migration.phases import read_phase
from unistatus.migration.replay import LOCK_TIMEOUT_MS, pending_count
from unistatus.migration.replay_conflicts import list_conflicts

M = DualWriteMode
UNISTATUS = str(Path(sys.executable).parent / "unistatus")


def _advance_to(db: Database, target: int) -> None:
    while True:
        with db.engine.connect() as conn:
            if read_phase(conn) >= target:
                return
        phases.advance(db.engine, db.settings, actor="setup", force=True, reason="test setup")


def _race(db: Database) -> dict[str, Any]:
    barrier = threading.Barrier(2)
    outcome: dict[str, Any] = {}

    def emergency() -> None:
        barrier.wait(timeout=10)
        try:
            outcome["rollback"] = rollback.emergency_rollback(
                db.engine, db.settings, actor="ops", reason="race: emergency"
            )
        except Exception as exc:
            outcome["rollback_error"] = exc

    def advance() -> None:
        barrier.wait(timeout=10)
        try:
            outcome["advance"] = phases.advance(
                db.engine, db.settings, actor="ops", force=True, reason="race: advance"
            )
        except Exception as exc:
            outcome["advance_error"] = exc

    threads = [threading.Thread(target=emergency), threading.Thread(target=advance)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    return outcome


def test_emergency_rollback_wins_a_race_with_a_forced_advance(db: Database) -> None:
    for trial in range(4):
        _advance_to(db, 3)
        outcome = _race(db)
        assert "rollback_error" not in outcome, (trial, outcome["rollback_error"])
        assert outcome["rollback"]["to_phase"] == 0
        # The rollback's move to 0 is in the log; anything after it started from 0 (an
        # advance that measured its gates after the rollback), never from 3 or 4.
        changes = history(db.engine, "phase", limit=10)  # newest first
        at = next(
            i
            for i, c in enumerate(changes)
            if c.metadata and c.metadata.get("emergency") and c.new_value == "0"
        )
        later = changes[:at]
        assert all(c.metadata and c.metadata["from_phase"] == 0 for c in later), later
        with db.engine.connect() as conn:
            phase = read_phase(conn)
        assert phase == (1 if later else 0)
        assert get_mode(db.engine) is phases.PHASES[phase].mode


def _unified_only_with_pending(db: Database, n: int = 3) -> list[Any]:
    """Phase 4 (UNIFIED_ONLY) with one pending change on each of ``n`` legacy-backed rows."""
    _advance_to(db, 1)
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    adapter.modes.refresh()
    created = [adapter.create_transaction("WALLET_CASHOUT", 7, "5", "USD") for _ in range(n)]
    _advance_to(db, 4)
    assert adapter.modes.refresh() is M.UNIFIED_ONLY
    for r in created:
        assert adapter.update_status(r.entity_id, "OTP_PENDING", "w", "t").overall_success
    assert pending_count(db.engine) == n
    return created


def _legacy_status(db: Database, legacy_id: int) -> str:
    return str(db.scalar("SELECT status FROM cashouts WHERE id = :i", i=legacy_id))


def test_a_locked_legacy_row_stalls_neither_writers_nor_the_rollback(pg: Database) -> None:
    created = _unified_only_with_pending(pg)
    locked_id = created[0].legacy_entity_id
    before = _legacy_status(pg, locked_id)
    blocker = pg.engine.connect()
    blocker.begin()
    blocker.execute(sa.text("SELECT id FROM cashouts WHERE id = :i FOR UPDATE"), {"i": locked_id})
    result: dict[str, Any] = {}
    durations: list[float] = []
    stop = threading.Event()

    def roll_back() -> None:
        result["r"] = rollback.emergency_rollback(
            pg.engine, pg.settings, actor="ops", reason="row lock test"
        )

    def write() -> None:
        adapter = DualWriteAdapter(pg.engine, settings=pg.settings)
        while not stop.is_set():
            started = time.monotonic()
            adapter.create_transaction("ESCROW", 9, "1", "EUR")
            durations.append(time.monotonic() - started)

    writer = threading.Thread(target=write)
    runner = threading.Thread(target=roll_back)
    try:
        writer.start()
        runner.start()
        runner.join(timeout=20)
        assert not runner.is_alive(), "the rollback waited on the locked legacy row"
        stop.set()
        writer.join(timeout=10)
        assert not writer.is_alive(), "a writer is stalled behind the replay"
    finally:
        stop.set()
        blocker.rollback()
        blocker.close()
        runner.join(timeout=30)
        writer.join(timeout=30)
    replay = result["r"]["replay"]
    assert replay["conflicts"] == 1 and replay["replayed"] >= 2  # + the writer's creates
    [conflict] = list_conflicts(pg.engine)
    assert conflict.cause == "legacy_busy" and conflict.legacy_id == locked_id
    assert _legacy_status(pg, locked_id) == before  # not overwritten, kept for the operator
    assert durations and max(durations) < LOCK_TIMEOUT_MS / 1000 + 1.5, max(durations)
    assert get_mode(pg.engine) is M.LEGACY_ONLY


HOLDER = """
SELECT a.pid, a.wait_event_type
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objid::bigint = :key
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def test_a_killed_rollback_does_not_keep_the_mode_lock(pg: Database) -> None:
    _unified_only_with_pending(pg)
    blocker = pg.engine.connect()
    blocker.begin()
    # A row the replay must update: it waits on it while holding the mode lock.
    blocker.execute(
        sa.text("SELECT id FROM unistatus_pending_legacy ORDER BY id LIMIT 1 FOR UPDATE")
    )
    proc = subprocess.Popen(
        [UNISTATUS, "--database-url", pg.url, "rollback", "--emergency", "--reason", "kill"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        waiting = None
        with pg.engine.connect() as watch:
            while waiting is None and time.monotonic() < deadline and proc.poll() is None:
                rows = watch.execute(sa.text(HOLDER), {"key": MODE_LOCK_KEY}).all()
                waiting = next((r for r in rows if r.wait_event_type == "Lock"), None)
                watch.rollback()
                time.sleep(0.02)
        assert waiting is not None, "the rollback never held the mode lock while waiting"
        proc.kill()
        proc.wait(timeout=10)
        killed_at = time.monotonic()
        with pg.engine.connect() as watch:
            while True:
                held = watch.execute(sa.text(HOLDER), {"key": MODE_LOCK_KEY}).all()
                watch.rollback()
                if not held or time.monotonic() - killed_at > 6:
                    break
                time.sleep(0.05)
        assert not held, f"the killed rollback's session still holds the mode lock: {held}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        blocker.rollback()
        blocker.close()
