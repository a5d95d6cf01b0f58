"""Synthetic legacy rows for the demo, tests and benchmarks, inserted set-based.

One ``INSERT ... SELECT`` per legacy table over a series generated in the database
(``generate_series`` on PostgreSQL, a recursive CTE on SQLite): a million rows take
seconds, not minutes. Every value is derived from the series number by a fixed
multiplicative hash, so the same ``seed`` gives the same data on every backend.

The status mix is realistic: most rows are final (SUCCESS, COMPLETED, FAILED, ...),
a share is in flight, and every legacy value of the system is present (the first rows
of each system walk through all of them). ``unmappable=k`` adds rows whose status the
mapping must refuse (lower case, a typo, NULL, a value the legacy app added later),
so quarantine and check code has something real to find.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.dialect import DialectOps, ops_for
from unistatus.db.legacy import LEGACY_COLUMNS, LegacyTable, resolve_legacy_tables
from unistatus.domain.inputs import shown
from unistatus.domain.statuses import (
    CashoutStatus,
    EscrowStatus,
    ExchangeStatus,
    LegacySystemType,
)
from unistatus.errors import InputError

# Relative weights of each legacy value (per mille-ish). Final values dominate, as in
# a payments table that has been live for years; in-flight values are a thin slice.
STATUS_WEIGHTS: Mapping[LegacySystemType, Mapping[str, int]] = {
    LegacySystemType.CASHOUT: {
        CashoutStatus.SUCCESS: 520,
        CashoutStatus.COMPLETED: 60,
        CashoutStatus.FAILED: 90,
        CashoutStatus.CANCELLED: 70,
        CashoutStatus.EXPIRED: 40,
        CashoutStatus.PENDING: 40,
        CashoutStatus.OTP_PENDING: 30,
        CashoutStatus.USER_CONFIRM_PENDING: 25,
        CashoutStatus.ADMIN_PENDING: 25,
        CashoutStatus.PENDING_ADDRESS_CONFIG: 10,
        CashoutStatus.PENDING_SERVICE_FUNDING: 10,
        CashoutStatus.APPROVED: 25,
        CashoutStatus.EXECUTING: 25,
        CashoutStatus.AWAITING_RESPONSE: 30,
    },
    LegacySystemType.ESCROW: {
        EscrowStatus.COMPLETED: 560,
        EscrowStatus.CANCELLED: 90,
        EscrowStatus.REFUNDED: 50,
        EscrowStatus.EXPIRED: 60,
        EscrowStatus.DISPUTED: 20,
        EscrowStatus.CREATED: 40,
        EscrowStatus.PAYMENT_PENDING: 30,
        EscrowStatus.PENDING_DEPOSIT: 15,
        EscrowStatus.PARTIAL_PAYMENT: 10,
        EscrowStatus.PAYMENT_CONFIRMED: 20,
        EscrowStatus.AWAITING_SELLER: 25,
        EscrowStatus.PENDING_SELLER: 10,
        EscrowStatus.ACTIVE: 70,
    },
    LegacySystemType.EXCHANGE: {
        ExchangeStatus.COMPLETED: 600,
        ExchangeStatus.FAILED: 70,
        ExchangeStatus.CANCELLED: 80,
        ExchangeStatus.ADDRESS_GENERATION_FAILED: 15,
        ExchangeStatus.CREATED: 40,
        ExchangeStatus.RATE_LOCKED: 25,
        ExchangeStatus.AWAITING_DEPOSIT: 50,
        ExchangeStatus.PAYMENT_RECEIVED: 20,
        ExchangeStatus.PAYMENT_CONFIRMED: 20,
        ExchangeStatus.PENDING_APPROVAL: 20,
        ExchangeStatus.PROCESSING: 60,
    },
}

# Statuses the mapping must refuse: lower case, a typo, NULL, a value added later.
UNMAPPABLE_STATUSES: Mapping[LegacySystemType, Sequence[str | None]] = {
    LegacySystemType.CASHOUT: ("success", "SUCESS", None, "ON_HOLD"),
    LegacySystemType.ESCROW: ("completed", "COMPLETD", None, "ON_HOLD"),
    LegacySystemType.EXCHANGE: ("processing", "PROCESING", None, "ON_HOLD"),
}

CURRENCIES: Mapping[LegacySystemType, Sequence[str]] = {
    LegacySystemType.CASHOUT: ("USD", "EUR", "USDT", "NGN"),
    LegacySystemType.ESCROW: ("USD", "EUR", "NGN", "GHS"),
    LegacySystemType.EXCHANGE: ("BTC", "ETH", "USDT", "USD"),
}

HISTORY_DAYS = 180  # created_at spreads over this many days before now
MAX_USER_ID = 50_000
MAX_CENTS = 5_000_000  # amounts from 1.00 to 50,000.00
_PRIME = 4_294_967_311  # > 2**32; products with ids up to ~10**9 stay inside BIGINT
MAX_SEED = 2**31 - 1  # seeds are 0..MAX_SEED
# A salt below 2**30 keeps (id + salt) * _SALTS[...] inside BIGINT for ids up to ~1.7e9:
# a larger one overflows (PostgreSQL: an error; SQLite: a float, then NULL times).
_SALT_RANGE = 2**30
_SALTS = {
    "status": 2_654_435_761,
    "user": 2_246_822_519,
    "money": 3_266_489_917,
    "time": 668_265_263,
}


def split_counts(n: int, systems: Sequence[LegacySystemType]) -> dict[LegacySystemType, int]:
    """How ``n`` rows are shared between ``systems`` (as evenly as possible, in order)."""
    if n < 0:
        raise ValueError(f"row count must be >= 0, got {n}")
    base, extra = divmod(n, len(systems))
    return {s: base + (1 if i < extra else 0) for i, s in enumerate(systems)}


def check_seed(seed: object) -> int:
    """``seed`` if it is an integer from 0 to :data:`MAX_SEED`, else :class:`InputError`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed must be an integer from 0 to {MAX_SEED}, got {shown(seed)}")
    return seed


def seed_legacy(
    engine: sa.Engine,
    settings: Settings,
    n: int,
    *,
    seed: int = 0,
    unmappable: int = 0,
    systems: Sequence[LegacySystemType | str] | None = None,
    only_into_empty: bool = False,
) -> dict[str, int]:
    """Insert ``n`` synthetic rows (plus ``unmappable`` bad ones) across the legacy tables.

    ``only_into_empty``: insert nothing (``{}``) if any of the tables holds a row, looked
    at in the transaction that inserts (PostgreSQL: the tables locked against another
    seed first), so `init --demo-data N` run again, or twice at once, seeds once.

    Rows are shared evenly between ``systems`` (default: all three). ``seed`` is from 0
    to :data:`MAX_SEED` (else :class:`InputError`, nothing written). Returns the rows
    inserted per system value (``{"CASHOUT": ..., ...}``), unmappable rows included.
    Ids come from the tables' own sequences, so the adapter can keep inserting after.
    """
    if n < 0 or unmappable < 0:
        raise ValueError("n and unmappable must be >= 0")
    check_seed(seed)
    chosen = [LegacySystemType.parse(s) for s in systems] if systems else list(LegacySystemType)
    tables = resolve_legacy_tables(engine, settings, systems=chosen)
    ops = ops_for(engine)
    now = utcnow().replace(microsecond=0)
    good = split_counts(n, chosen)
    bad = split_counts(unmappable, chosen)
    inserted: dict[str, int] = {}
    with engine.begin() as conn:
        if only_into_empty and _any_rows(conn, [tables[s] for s in chosen]):
            return {}
        for i, system in enumerate(chosen):
            lt = tables[system]
            salt = (seed * 7_919 + i * 104_729) % _SALT_RANGE  # the same below 135,000
            total = 0
            if good[system]:
                statuses = _status_case(system, good[system])
                total += _insert(conn, ops, lt, good[system], salt, now, statuses)
            if bad[system]:
                statuses = _unmappable_case(system)
                total += _insert(conn, ops, lt, bad[system], salt + 1, now, statuses)
            inserted[system.value] = total
    return inserted


def _any_rows(conn: sa.Connection, tables: Sequence[LegacyTable]) -> bool:
    """Whether any of ``tables`` holds a row. Looked at unlocked first: a database that
    holds rows is seen so at once, with no lock queued behind its writers (and every
    writer queued behind that). Empty, on PostgreSQL each table is then locked SHARE ROW
    EXCLUSIVE, waiting as long as another seed holds it (readers go on; another seed
    waits, then sees these rows), and looked at again."""

    def seen() -> bool:
        return any(
            conn.execute(sa.select(sa.literal(1)).select_from(lt.table).limit(1)).first()
            for lt in tables
        )

    if conn.dialect.name != "postgresql":
        return seen()  # SQLite: the write transaction already holds the whole database
    if seen():
        return True
    with ops_for(conn.engine).waiting_while_held(conn):  # for the other seed's whole insert
        for lt in tables:
            name = conn.dialect.identifier_preparer.format_table(lt.table)
            conn.exec_driver_sql(f"LOCK TABLE {name} IN SHARE ROW EXCLUSIVE MODE")
    return seen()


def legacy_row_counts(engine: sa.Engine, settings: Settings) -> dict[str, int]:
    """Rows per legacy table (its name), for saying why nothing was seeded."""
    tables = resolve_legacy_tables(engine, settings)
    with engine.connect() as conn:
        return {
            lt.table.name: int(
                conn.execute(sa.select(sa.func.count()).select_from(lt.table)).scalar_one()
            )
            for lt in tables.values()
        }


def id_ranges(
    engine: sa.Engine, settings: Settings, systems: Sequence[LegacySystemType] | None = None
) -> dict[LegacySystemType, tuple[int, int]]:
    """(min id, max id) of each non-empty legacy table: what traffic can pick rows from."""
    tables = resolve_legacy_tables(engine, settings, systems=list(systems) if systems else None)
    out: dict[LegacySystemType, tuple[int, int]] = {}
    with engine.connect() as conn:
        for system, lt in tables.items():
            lo, hi = conn.execute(sa.select(sa.func.min(lt.id), sa.func.max(lt.id))).one()
            if lo is not None:
                out[system] = (int(lo), int(hi))
    return out


# --- SQL building ---------------------------------------------------------------------

# Builds the status expression from the row number and its hash.
StatusCase = Callable[[sa.ColumnElement[int], sa.ColumnElement[int]], sa.ColumnElement[Any]]


def _hash(g: sa.ColumnElement[int], salt: int, which: str) -> sa.ColumnElement[int]:
    """A deterministic, well-spread non-negative integer per row (same on every backend)."""
    mixed = (g + sa.literal(salt, sa.BigInteger)) * sa.literal(_SALTS[which], sa.BigInteger)
    return mixed % sa.literal(_PRIME, sa.BigInteger)


def _status_case(system: LegacySystemType, count: int) -> StatusCase:
    weights = STATUS_WEIGHTS[system]
    values = list(weights)
    total = sum(weights.values())

    def build(g: sa.ColumnElement[int], h: sa.ColumnElement[int]) -> sa.ColumnElement[str]:
        # The first len(values) rows take every value once, so each is always present.
        whens: list[tuple[sa.ColumnElement[bool], str]] = [
            (g == k + 1, v) for k, v in enumerate(values) if k < count
        ]
        bucket = h % total
        upper = 0
        for value, weight in weights.items():
            upper += weight
            whens.append((bucket < upper, value))
        return sa.case(*whens, else_=values[0])

    return build


def _unmappable_case(system: LegacySystemType) -> StatusCase:
    bad = UNMAPPABLE_STATUSES[system]

    def build(g: sa.ColumnElement[int], h: sa.ColumnElement[int]) -> sa.ColumnElement[Any]:
        return sa.case(
            *[
                (g % len(bad) == k, sa.literal(v, sa.String) if v else sa.null())
                for k, v in enumerate(bad)
            ],
            else_=sa.null(),
        )

    return build


def _choice(expr: sa.ColumnElement[int], options: Sequence[str]) -> sa.ColumnElement[str]:
    return sa.case(
        *[(expr % len(options) == k, v) for k, v in enumerate(options)], else_=options[0]
    )


def _insert(
    conn: sa.Connection,
    ops: DialectOps,
    lt: LegacyTable,
    count: int,
    salt: int,
    now: Any,
    statuses: StatusCase,
) -> int:
    series = ops.integer_series(count)
    g = series.c.g
    # Hash once per row in an inner select; the outer select derives every column.
    inner = sa.select(
        g.label("g"),
        _hash(g, salt, "status").label("hs"),
        _hash(g, salt, "user").label("hu"),
        _hash(g, salt, "money").label("hm"),
        _hash(g, salt, "time").label("ht"),
    ).subquery("h")
    age = inner.c.ht % int(timedelta(days=HISTORY_DAYS).total_seconds())
    # updated_at lies between created_at and now: up to three days after creation.
    update_gap = inner.c.hm % (3 * 86_400)
    since_update = sa.case((update_gap < age, age - update_gap), else_=0)
    money = sa.cast(inner.c.hm % MAX_CENTS + 100, sa.Numeric(20, 8)) / sa.literal_column(
        "100.0", sa.Numeric(20, 8)
    )
    # A synthetic value for every legacy column but the id (the table's own sequence); a
    # column added to LEGACY_COLUMNS needs its generator here (a KeyError says so).
    values: dict[str, sa.ColumnElement[Any]] = {
        "status": statuses(inner.c.g, inner.c.hs),
        "user_id": inner.c.hu % MAX_USER_ID + 1,
        "amount": money,
        "currency": _choice(inner.c.hu // 7, CURRENCIES[lt.system]),
        "created_at": ops.seconds_before(now, age),
        "updated_at": ops.seconds_before(now, since_update),
    }
    names = [name for name in LEGACY_COLUMNS if name != "id"]
    # Into an application's enum (status, currency) each value is cast (as_stored).
    select = sa.select(*(lt.as_stored(name, values[name]).label(name) for name in names))
    columns = [lt.column(name).key for name in names]
    conn.execute(sa.insert(lt.table).from_select(columns, select))
    return count
