"""The capture under concurrency (PostgreSQL): adapter, raw writers and backfill at once.

8 adapter threads and 4 raw-SQL writer threads (single-row and small bulk UPDATEs) change
the same cashouts while a backfill creates their unified rows. At the end: 100%
consistent, every entity carries its last write (legacy, unified and the last history row
agree), exactly one history row per accepted change, ``version`` one more per change.

``UNISTATUS_CAPTURE_STRESS_ROWS`` sets the number of rows (default 6,000, so the suite
stays fast; the issue's figure: ``UNISTATUS_CAPTURE_STRESS_ROWS=100000``).
"""

from __future__ import annotations

import os
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from conftest import Database
from support.capture_data import (
    CRON,
    captured,
    history_of,
    raw_writer,
    unified_of,
    writer_name,
)
from support.race import (
    BACKFILLED_ROW,
    SLOW_SETTING,
    one_unbackfilled_cashout,
    wait_for_sleep,
)
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.backfill import run_backfill
from unistatus.config import load_settings
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine
from unistatus.db.tables import status_history, unified_transactions
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import UnistatusError
from unistatus.migration import capture
from unistatus.migration.check import run_check

pytestmark = pytest.mark.postgres

ROWS = int(os.environ.get("UNISTATUS_CAPTURE_STRESS_ROWS", "6000"))
ADAPTER_THREADS, RAW_THREADS = 8, 4
ADAPTER_OPS, RAW_OPS = 250, 150
# The raw writers flip EXECUTING and AWAITING_RESPONSE, whose unified statuses
# (PROCESSING, AWAITING_RESPONSE) may follow each other both ways: every write is
# accepted by the rules, so every change counts.


def test_adapter_raw_writers_and_backfill_at_once(pg: Database) -> None:
    with pg.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
                "updated_at) SELECT g, 7, 10.50, 'USD', 'EXECUTING', now(), now() "
                "FROM generate_series(1, :n) AS g"
            ),
            {"n": ROWS},
        )
    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    settings = load_settings(database_url=pg.url, write_concurrency=0)
    accepted: Counter[int] = Counter()  # per entity, adapter and raw writers alike
    raw_rows = Counter[str]()
    lock = threading.Lock()
    start = threading.Barrier(ADAPTER_THREADS + RAW_THREADS + 1)

    def adapter_thread(seed: int, adapter: DualWriteAdapter) -> None:
        rnd = random.Random(seed)
        start.wait()
        for _ in range(ADAPTER_OPS):
            lid = rnd.randint(1, ROWS)
            target = rnd.choice(["PROCESSING", "AWAITING_RESPONSE"])
            try:
                r = adapter.update_status(f"cashout:{lid}", target, "svc", "svc")
            except UnistatusError as exc:  # none expected: every change is allowed
                raise AssertionError(f"refused: {exc}") from exc
            assert r.overall_success, r.error
            if r.changed:
                with lock:
                    accepted[lid] += 1

    def raw_thread(seed: int) -> None:
        rnd = random.Random(seed)
        with raw_writer(pg) as engine:
            start.wait()
            for _ in range(RAW_OPS):
                first = rnd.randint(1, ROWS)
                last = first + (rnd.choice([0, 0, 0, 19]))  # mostly single rows
                with engine.begin() as conn:
                    changed = conn.execute(
                        sa.text(
                            "UPDATE cashouts SET status = CASE status WHEN 'EXECUTING' THEN "
                            "'AWAITING_RESPONSE' ELSE 'EXECUTING' END, updated_at = now() "
                            "WHERE id BETWEEN :a AND :b RETURNING id"
                        ),
                        {"a": first, "b": min(last, ROWS)},
                    ).scalars()
                    ids = list(changed)
                with lock:
                    accepted.update(ids)
                    raw_rows["written"] += len(ids)

    adapter = DualWriteAdapter(pg.engine, settings=settings)
    adapter.modes.refresh()
    with captured(pg), ThreadPoolExecutor(ADAPTER_THREADS + RAW_THREADS) as pool:
        futures = [pool.submit(adapter_thread, i, adapter) for i in range(ADAPTER_THREADS)]
        futures += [pool.submit(raw_thread, 100 + i) for i in range(RAW_THREADS)]
        start.wait()
        report = run_backfill(
            pg.engine, pg.settings, systems=[LegacySystemType.CASHOUT], batch_size=200
        )
        for f in futures:
            f.result()
        assert report.as_dict()["systems"]["CASHOUT"]["state"] == "complete"
        check = run_check(pg.engine, pg.settings, store=False)
        writers = capture.writers_seen(pg.engine)
    adapter.close()

    assert check.total == ROWS and check.is_consistent, _explain(pg, check.examples)
    # Every raw row write counted, none flagged; no writer but the cron job (the adapter
    # and the backfill are unistatus); nothing written to unified_transactions from outside.
    assert [(w.system, w.writes, w.flagged) for w in writers] == [
        ("CASHOUT", raw_rows["written"], 0)
    ]
    assert [w.writer for w in writers] == [writer_name(pg)]

    U, H = unified_transactions, status_history
    with pg.engine.connect() as conn:
        legacy = dict(conn.execute(sa.text("SELECT id, status FROM cashouts")).all())
        unified = {
            r.legacy_id: r
            for r in conn.execute(
                sa.select(U.c.legacy_id, U.c.legacy_status, U.c.version, U.c.origin)
            )
        }
        counts = dict(
            conn.execute(sa.select(H.c.legacy_id, sa.func.count()).group_by(H.c.legacy_id)).all()
        )
        last = dict(
            conn.execute(
                sa.select(H.c.legacy_id, H.c.to_legacy_status).where(
                    H.c.id.in_(sa.select(sa.func.max(H.c.id)).group_by(H.c.legacy_id))
                )
            ).all()
        )
    assert len(unified) == ROWS
    # They did run at once: some unified rows were made by the backfill, some by a change
    # (the adapter's, or the capture's) that came first; thousands of changes accepted.
    assert {u.origin for u in unified.values()} == {"backfill", "dual_write"}
    assert sum(accepted.values()) > ADAPTER_THREADS * ADAPTER_OPS // 2
    for lid in range(1, ROWS + 1):
        u = unified[lid]
        assert counts.get(lid, 0) == accepted[lid], lid  # one history row per change
        assert u.legacy_status == legacy[lid]
        if accepted[lid]:
            assert last[lid] == legacy[lid], lid  # the last write is what every side holds
        # version: 1 when created, + 1 per change (a row created by a change counts it).
        assert u.version == accepted[lid] + (1 if u.origin == "backfill" else 0), lid


def _explain(pg: Database, examples: list[dict[str, object]]) -> str:
    """The first inconsistent rows with their history, for the failure message."""
    lines = []
    with pg.engine.connect() as conn:
        for e in examples[:3]:
            lines.append(str(e))
            for h in conn.execute(
                sa.text(
                    "SELECT id, from_status, to_status, to_legacy_status, triggered_by, reason "
                    "FROM unified_status_history WHERE legacy_id = :id ORDER BY id"
                ),
                {"id": e["legacy_id"]},
            ):
                lines.append(f"   {tuple(h)}")
            u = conn.execute(
                sa.text(
                    "SELECT status, legacy_status, version, origin FROM unified_transactions "
                    "WHERE legacy_id = :id"
                ),
                {"id": e["legacy_id"]},
            ).first()
            lines.append(f"   unified {tuple(u) if u else None}")
    return "\n".join(lines)


def test_a_bypass_write_racing_the_backfill_for_the_unified_row_is_not_refused(
    scratch_pg: Database,
) -> None:
    """A raw UPDATE of an unbackfilled cashout creates its unified row (the capture)
    while the backfill inserts the same row and commits, after the capture's insert had
    passed its conflict check (held before the keys' indexes by a slow index). Arbitrated
    on the primary key alone, the insert meets the row in the legacy reference's unique
    index: a unique violation, and the cron job's UPDATE fails. It must succeed, with the
    backfilled row brought in step."""
    db = scratch_pg
    one_unbackfilled_cashout(db, before_primary_key=True)
    cron = create_engine(
        db.url, connect_args={"application_name": CRON, "options": f"-c {SLOW_SETTING}=on"}
    )

    def cron_job() -> None:
        with cron.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE cashouts SET status = 'AWAITING_RESPONSE', updated_at = now() WHERE id = 1"
            )

    with captured(db), ThreadPoolExecutor(1) as pool:
        job = pool.submit(cron_job)
        wait_for_sleep(db)  # the capture's insert is in the slow index
        with db.engine.begin() as conn:
            conn.exec_driver_sql(BACKFILLED_ROW)
        job.result()
        check = run_check(db.engine, db.settings, store=False)
    cron.dispose()
    assert check.is_consistent and check.total == 1
    row = unified_of(db, "CASHOUT", 1)
    assert row is not None
    assert (row["status"], row["legacy_status"], row["version"], row["origin"]) == (
        "AWAITING_RESPONSE",
        "AWAITING_RESPONSE",
        2,
        "backfill",
    )
    history = history_of(db, "CASHOUT", 1)
    assert [(h["from_legacy_status"], h["to_legacy_status"]) for h in history] == [
        ("EXECUTING", "AWAITING_RESPONSE")
    ]
    assert history[0]["triggered_by"] == writer_name(db)
