"""Repair under live traffic (PostgreSQL): no deadlock, no lost write, a clean check after;
and one repair of a system at a time.

Threads write random statuses through the dual-write adapter (forced, so any target is
accepted) to damaged and healthy entities while ``run_repair`` works through the same
entities. Repair takes the adapter's lock order (mode lock, legacy row, unified row) and
re-judges each entity under its locks, so nothing fails, every adapter write succeeds,
and the check afterwards shows zero for every repaired kind. The adapter's writes are the
newest, so ``newest_wins`` must also keep them: each entity's last written status is
what both sides hold at the end.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from support.check_data import damage, populate
from support.race import BACKFILLED_ROW
from unistatus.adapter.core import DualWriteAdapter
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine
from unistatus.db.tables import status_history
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.mapping import CANONICAL_REVERSE
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import InputError
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair

N = 100
THREADS = 4
SECONDS = 1.5


def test_repair_while_the_adapter_writes(pg: Any) -> None:
    populate(pg.engine, pg.settings, N)
    damage(pg.engine, pg.settings, N)
    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
    adapter = DualWriteAdapter(pg.engine, settings=pg.settings)
    cashout = LegacySystemType.CASHOUT
    statuses = [s.value for s in CANONICAL_REVERSE[cashout.transaction_type]]
    # Writable entities: not the unmappable (4) or orphaned (5) ones.
    ids = [i for i in range(1, N + 1) if i % 10 not in (4, 5)]
    last: dict[int, str] = {}
    failures: list[str] = []
    locks = {i: threading.Lock() for i in ids}
    stop = time.monotonic() + SECONDS

    def writer(seed: int) -> None:
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            legacy_id, status = rnd.choice(ids), rnd.choice(statuses)
            # One writer per entity at a time, so the record of its last status is exact.
            with locks[legacy_id]:
                result = adapter.update_status(
                    f"cashout:{legacy_id}", status, "load", "test", force=True
                )
                if result.overall_success:
                    last[legacy_id] = status
                else:
                    failures.append(str(result.error))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    reports = []
    while any(t.is_alive() for t in threads):
        reports.append(run_repair(pg.engine, pg.settings, strategy="newest_wins"))
    for t in threads:
        t.join()
    reports.append(run_repair(pg.engine, pg.settings, strategy="newest_wins"))

    assert not failures
    assert last, "the writers made no progress"
    assert sum(r.failed for r in reports) == 0
    assert sum(r.repaired for r in reports) > 0
    after = run_check(pg.engine, pg.settings)
    for kind in ("missing_unified", "status_mismatch", "field_mismatch"):
        assert after.inconsistencies[kind] == 0, after.as_dict()
    with pg.engine.connect() as conn:
        held = dict(
            conn.execute(
                sa.select(U.c.legacy_id, U.c.status).where(
                    U.c.legacy_system == cashout.value, U.c.legacy_id.in_(list(last))
                )
            ).all()
        )
    assert held == last


def test_a_unified_row_another_writer_inserts_first_is_not_counted_as_repaired(
    pg: Any,
) -> None:
    """The repair of a missing unified row: the backfill inserts the row (and commits)
    after the repair read the entity and before its own insert, which then writes
    nothing. The repair must say so (already consistent), not count a repair nor write
    a repair's history row for a row it did not create."""
    with pg.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
            "updated_at) VALUES (1, 7, 10, 'USD', 'EXECUTING', now(), now())"
        )
    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
    backfill = create_engine(pg.url)
    raced: list[str] = []

    def backfill_first(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if (
            not raced
            and statement.startswith("INSERT INTO")
            and "unified_transactions" in (statement.split("(")[0])
        ):
            raced.append(statement)
            with backfill.begin() as other:
                other.exec_driver_sql(BACKFILLED_ROW)

    sa.event.listen(pg.engine, "before_cursor_execute", backfill_first)
    try:
        report = run_repair(pg.engine, pg.settings, strategy="legacy_wins", actor="test")
    finally:
        sa.event.remove(pg.engine, "before_cursor_execute", backfill_first)
        backfill.dispose()
    assert raced, "the repair never inserted a unified row"
    assert (report.repaired, report.already_consistent) == (0, 1)
    with pg.engine.connect() as conn:
        origins = conn.execute(sa.select(U.c.origin)).scalars().all()
        history = conn.execute(sa.select(status_history.c.triggered_by)).scalars().all()
    assert origins == ["backfill"]
    assert history == []


def test_a_second_repair_of_the_same_system_is_refused_while_one_runs(db: Any) -> None:
    """Two operators' repairs at once (``legacy_wins`` and ``unified_wins``): each
    re-judged an entity under its locks, so the second found the first's work
    "already consistent" and said it kept its side (exit 0) over values the other had
    just overwritten, or each repaired half, a mix of both strategies (a probe). One
    repair of a system at a time: the second is refused before it reads anything, and
    a repair of another system goes on beside it. A dry run writes nothing and is not
    held up."""
    populate(db.engine, db.settings, 20)
    damage(db.engine, db.settings, 20)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
    working, release = threading.Event(), threading.Event()

    def hold(*_: Any) -> None:
        working.set()
        assert release.wait(30)

    first: list[Any] = []
    runner = threading.Thread(
        target=lambda: first.append(
            run_repair(
                db.engine,
                db.settings,
                strategy="legacy_wins",
                systems=["cashout"],
                reason="alice",
                on_progress=hold,
            )
        )
    )
    runner.start()
    try:
        assert working.wait(30), "the first repair never started"
        with pytest.raises(InputError, match=r"another repair of CASHOUT is running"):
            run_repair(db.engine, db.settings, strategy="unified_wins", reason="bob")
        dry = run_repair(db.engine, db.settings, strategy="unified_wins", dry_run=True)
        assert dry.dry_run
        beside = run_repair(
            db.engine, db.settings, strategy="unified_wins", systems=["escrow"], reason="carol"
        )
        assert beside.repaired > 0 and beside.failed == 0
    finally:
        release.set()
        runner.join(60)
    assert first and first[0].repaired > 0 and first[0].failed == 0
    # Its claim ends with it: the next repair runs.
    run_repair(db.engine, db.settings, strategy="unified_wins", reason="bob")
