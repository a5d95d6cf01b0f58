"""Retention (unistatus.observe.retention): idempotency keys and continuous verification
reports older than their retention are deleted, in bounded batches, by the monitor too;
the newest verification report and every full check report are kept. Both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in
from unistatus import DualWriteMode, LegacySystemType
from unistatus.clock import utcnow
from unistatus.config import load_settings
from unistatus.db.tables_check import check_reports
from unistatus.db.tables_idempotency import idempotency_keys
from unistatus.errors import ConfigError
from unistatus.migration.check import CheckReport, store_report
from unistatus.migration.verify import CONTINUOUS_SCOPE, judged_report
from unistatus.observe.alerts import Monitor
from unistatus.observe.retention import prune

K, R = idempotency_keys, check_reports


def age_keys(db: Database, days: float, *keys: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            sa.update(K).where(K.c.key.in_(keys)).values(created_at=utcnow() - timedelta(days=days))
        )


def keys_left(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return sorted(conn.execute(sa.select(K.c.key)).scalars())


def report(db: Database, scope: str, days_ago: float) -> int:
    at = utcnow() - timedelta(days=days_ago)
    every = [system.value for system in LegacySystemType]  # judged as the whole database's
    r = CheckReport(scope=scope, systems=every, total=1, consistent=1)
    r.started_at = r.created_at = at
    store_report(db.engine, r)
    assert r.id is not None
    return r.id


def reports_left(db: Database) -> list[int]:
    with db.engine.connect() as conn:
        return sorted(conn.execute(sa.select(R.c.id)).scalars())


def judged_id(db: Database) -> int | None:
    judged = judged_report(db.engine)
    return judged.id if judged is not None else None


def test_keys_past_their_retention_are_deleted_and_new_again(db: Database) -> None:
    a = adapter_in(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    old = a.create_transaction("ESCROW", 1, "5", "USD", idempotency_key="old")
    recent = a.create_transaction("ESCROW", 1, "5", "USD", idempotency_key="recent")
    assert keys_left(db) == ["old", "recent"]
    age_keys(db, 31, "old")

    pruned = prune(db.engine, db.settings)

    assert (pruned.idempotency_keys, pruned.verification_reports) == (1, 0)
    assert keys_left(db) == ["recent"]
    # The key kept still protects a retry; the deleted one is a new key again.
    again = a.create_transaction("ESCROW", 1, "5", "USD", idempotency_key="recent")
    assert again.replayed and again.entity_id == recent.entity_id
    anew = a.create_transaction("ESCROW", 1, "5", "USD", idempotency_key="old")
    assert anew.changed and not anew.replayed and anew.entity_id != old.entity_id
    assert prune(db.engine, db.settings).total == 0  # nothing more is old enough


def test_old_verification_reports_go_the_newest_and_full_checks_stay(db: Database) -> None:
    full = report(db, "all", 400)
    old = [report(db, CONTINUOUS_SCOPE, 9), report(db, CONTINUOUS_SCOPE, 8)]
    recent = report(db, CONTINUOUS_SCOPE, 1)

    assert prune(db.engine, db.settings).verification_reports == 2

    assert reports_left(db) == sorted([full, recent])
    assert not set(old) & set(reports_left(db))


def test_the_newest_verification_report_is_kept_however_old(db: Database) -> None:
    """The alerts and dashboards judge by the newest report of continuous verification
    (by its time, then its id): a monitor stopped for weeks must not leave them with
    none, nor with an older one. Here the newest by time has the lower id (two monitors'
    clocks)."""
    newest = report(db, CONTINUOUS_SCOPE, 20)
    report(db, CONTINUOUS_SCOPE, 30)  # stored later, stamped earlier
    assert judged_id(db) == newest

    assert prune(db.engine, db.settings).verification_reports == 1

    assert reports_left(db) == [newest]
    assert judged_id(db) == newest


def test_zero_keeps_everything(db: Database) -> None:
    a = adapter_in(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    a.create_transaction("ESCROW", 1, "5", "USD", idempotency_key="old")
    age_keys(db, 3650, "old")
    report(db, CONTINUOUS_SCOPE, 3650)
    report(db, CONTINUOUS_SCOPE, 3000)
    forever = db.settings.model_copy(
        update={
            "retention": db.settings.retention.model_copy(
                update={"idempotency_keys_days": 0, "verification_reports_days": 0}
            )
        }
    )
    assert prune(db.engine, forever).total == 0
    assert keys_left(db) == ["old"] and len(reports_left(db)) == 2


def test_each_call_deletes_a_bounded_number_in_batches(db: Database) -> None:
    """A table years deep is caught up over several calls, a short transaction a batch."""
    a = adapter_in(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    names = [f"k{i:02}" for i in range(12)]
    for name in names:
        a.create_transaction("ESCROW", 1, "5", "USD", idempotency_key=name)
    for i, name in enumerate(names):
        age_keys(db, 60 - i, name)  # k00 the oldest

    first = prune(db.engine, db.settings, batch_rows=5, max_rows=7)
    assert first.idempotency_keys == 7 and first.more
    assert keys_left(db) == names[7:]  # the oldest first
    second = prune(db.engine, db.settings, batch_rows=5, max_rows=7)
    assert second.idempotency_keys == 5 and not second.more
    assert keys_left(db) == []


def test_the_monitor_prunes_when_it_keeps_house(db: Database) -> None:
    a = adapter_in(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    a.create_transaction("ESCROW", 1, "5", "USD", idempotency_key="old")
    age_keys(db, 45, "old")
    report(db, CONTINUOUS_SCOPE, 10)
    newest = report(db, CONTINUOUS_SCOPE, 9)

    Monitor(db.engine, db.settings, verify_rows=0).housekeep()

    assert keys_left(db) == [] and reports_left(db) == [newest]


def test_the_monitor_goes_on_at_the_next_evaluation_while_rows_remain(db: Database) -> None:
    """A call that stopped at its bound does not wait the 10 minutes to the next
    housekeeping: the next evaluation deletes more, until none is left."""
    a = adapter_in(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    names = [f"k{i}" for i in range(5)]
    for name in names:
        a.create_transaction("ESCROW", 1, "5", "USD", idempotency_key=name)
    age_keys(db, 60, *names)
    monitor = Monitor(db.engine, db.settings, verify_rows=0)
    monitor.prune_rows = 2
    left = []
    for _ in range(4):
        monitor.housekeep()
        left.append(len(keys_left(db)))
    assert left == [3, 1, 0, 0]


def test_retention_is_configured_per_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISTATUS_RETENTION__IDEMPOTENCY_KEYS_DAYS", "1.5")
    monkeypatch.setenv("UNISTATUS_RETENTION__VERIFICATION_REPORTS_DAYS", "0")
    keep = load_settings().retention
    assert (keep.idempotency_keys_days, keep.verification_reports_days) == (1.5, 0.0)
    for bad in ("-1", "1e6", "inf"):  # "forever" is 0
        monkeypatch.setenv("UNISTATUS_RETENTION__IDEMPOTENCY_KEYS_DAYS", bad)
        with pytest.raises(ConfigError, match="idempotency_keys_days"):
            load_settings()


def test_a_round_that_found_a_mismatch_is_kept_until_a_full_check(db: Database) -> None:
    """The alerts judge a round's mismatch until a full check begun after it: pruned
    after seven days, its alert resolved with nothing checked (a review)."""
    bad = CheckReport(scope=CONTINUOUS_SCOPE, systems=[s.value for s in LegacySystemType])
    bad.total, bad.consistent = 2, 1
    bad.started_at = bad.created_at = utcnow() - timedelta(days=9)
    store_report(db.engine, bad)
    report(db, CONTINUOUS_SCOPE, 8)
    newest = report(db, CONTINUOUS_SCOPE, 0)
    prune(db.engine, db.settings)
    assert bad.id in reports_left(db) and newest in reports_left(db)
    checked = report(db, "all", 0.5)  # a full check begun after it
    prune(db.engine, db.settings)
    assert reports_left(db) == sorted([newest, checked])
