"""Run one action per legacy system at the same moment, round after round."""

from __future__ import annotations

import threading
from collections.abc import Callable

import sqlalchemy as sa

from conftest import Database
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode, LegacySystemType


def in_lockstep(
    action: Callable[[LegacySystemType, int], None],
    rounds: int,
    after_round: Callable[[int], None],
    systems: tuple[LegacySystemType, ...] = tuple(LegacySystemType),
) -> list[BaseException]:
    """Call ``action(system, round)`` in one thread per system, every thread starting
    each round together (a barrier), then ``after_round(round)`` once they all finished
    it. Returns what the actions raised (empty: nothing), after the first round in
    which one raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(systems) + 1, timeout=60)
    done = threading.Barrier(len(systems) + 1, timeout=60)

    def run(system: LegacySystemType) -> None:
        for n in range(rounds):
            try:
                start.wait()
            except threading.BrokenBarrierError:
                return  # the test gave up (after_round raised)
            try:
                action(system, n)
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                errors.append(exc)
            try:
                done.wait()
            except threading.BrokenBarrierError:
                return

    threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in systems]
    for t in threads:
        t.start()
    try:
        for n in range(rounds):
            start.wait()
            done.wait()
            if errors:
                break  # the test reports them
            after_round(n)
    finally:
        start.abort()
        done.abort()
        for t in threads:
            t.join(timeout=60)
    return errors


# A session with this setting on is held 1.5 s by the slow index of :func:`slow_index`
# for every row it inserts into (or moves within) unified_transactions.
SLOW_SETTING = "test.slow"


def slow_index(conn: sa.Connection, *, before_primary_key: bool) -> None:
    """Stage a race in unified_transactions (PostgreSQL, a scratch database): an index
    whose expression sleeps 1.5 s in a session with :data:`SLOW_SETTING` on, filled
    before the legacy reference's unique index (and before the primary key's with
    ``before_primary_key``). An insert fills a table's indexes in creation order after
    its conflict pre-check, so such an insert is held between the two for as long as
    another session needs to insert and commit the same row."""
    conn.exec_driver_sql(
        "CREATE FUNCTION test_slow_key(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS "
        f"$$ BEGIN IF current_setting('{SLOW_SETTING}', true) = 'on' THEN "
        "PERFORM pg_sleep(1.5); END IF; RETURN $1; END $$"
    )
    conn.exec_driver_sql("CREATE INDEX test_slow ON unified_transactions (test_slow_key(id))")
    # Made again, the keys' indexes come after the slow one.
    if before_primary_key:
        primary_key = conn.exec_driver_sql(
            "SELECT conname FROM pg_constraint WHERE contype = 'p' "
            "AND conrelid = 'unified_transactions'::regclass"
        ).scalar_one()
        conn.exec_driver_sql(
            f'ALTER TABLE unified_transactions DROP CONSTRAINT "{primary_key}", '
            f'ADD CONSTRAINT "{primary_key}" PRIMARY KEY (id)'
        )
    conn.exec_driver_sql(
        "ALTER TABLE unified_transactions DROP CONSTRAINT uq_unified_legacy_ref, "
        "ADD CONSTRAINT uq_unified_legacy_ref UNIQUE (legacy_system, legacy_id)"
    )


# The unified row the backfill copies from cashout 1 (EXECUTING).
BACKFILLED_ROW = (
    "INSERT INTO unified_transactions (id, transaction_type, legacy_system, legacy_id, "
    "user_id, amount, currency, status, legacy_status, version, origin, created_at, "
    "updated_at) VALUES ('UTX100000000000001', 'WALLET_CASHOUT', 'CASHOUT', 1, 7, 10, "
    "'USD', 'PROCESSING', 'EXECUTING', 1, 'backfill', now(), now()) ON CONFLICT DO NOTHING"
)


def wait_for_sleep(db: Database) -> None:
    """Until a session of the database sleeps (in the slow index); at most 10 s."""
    for _ in range(1000):
        with db.engine.connect() as conn:
            if conn.exec_driver_sql(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event = 'PgSleep'"
            ).first():
                return
        threading.Event().wait(0.01)
    raise AssertionError("no session reached the slow index")


def one_unbackfilled_cashout(db: Database, *, before_primary_key: bool) -> None:
    """Cashout 1 (EXECUTING) without its unified row, the slow index of
    :func:`slow_index` in place, and the mode DUAL_WRITE_LEGACY_PRIMARY."""
    with db.engine.begin() as conn:
        slow_index(conn, before_primary_key=before_primary_key)
        conn.exec_driver_sql(
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
            "updated_at) VALUES (1, 7, 10, 'USD', 'EXECUTING', now(), now())"
        )
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")


def at_once(work: Callable[[str], object], *args: str) -> list[object]:
    """``work(arg)`` for each of ``args``, one thread each, started together (a barrier);
    what each returned or raised (an exception is returned, for the test to judge), in
    the order they finished."""
    start = threading.Barrier(len(args), timeout=60)
    out: list[object] = []

    def run(arg: str) -> None:
        start.wait()
        try:
            out.append(work(arg))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out
