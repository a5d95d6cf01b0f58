"""Test data for check and repair: set-based INSERTs of legacy and unified rows.

``populate`` fills each legacy table with one ``INSERT ... SELECT`` over a generated
sequence and the unified table with one ``INSERT ... SELECT`` from legacy (the forward
mapping as SQL), then ``damage`` introduces known differences with set-based UPDATEs
and DELETEs, so the expected counts are known exactly. ``insert_case`` writes one
hand-made legacy/unified pair for the rule-by-rule tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.ids import derive_utx_id, utx_id_sql
from unistatus.domain.mapping import LegacyStatusMapper, forward_case
from unistatus.domain.statuses import LegacySystemType

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 6, 1, tzinfo=UTC)
mapper = LegacyStatusMapper()


_reflected: dict[int, tuple[sa.Engine, dict[LegacySystemType, LegacyTable]]] = {}


def tables(engine: sa.Engine, settings: Settings) -> dict[LegacySystemType, LegacyTable]:
    """The reference legacy tables, reflected once per engine (reflection is slow)."""
    cached = _reflected.get(id(engine))
    if cached is None or cached[0] is not engine:
        cached = (engine, resolve_legacy_tables(engine, settings))
        _reflected[id(engine)] = cached
    return cached[1]


def _sequence(n: int) -> sa.CTE:
    seq = sa.select(sa.literal(1, sa.Integer).label("n")).cte("seq", recursive=True)
    return seq.union_all(sa.select((seq.c.n + 1).label("n")).where(seq.c.n < n))


def populate(engine: sa.Engine, settings: Settings, n: int) -> None:
    """``n`` legacy rows per system (ids 1..n, statuses cycling through all of them),
    each with its matching unified row."""
    with engine.begin() as conn:
        for system, lt in tables(engine, settings).items():
            assert lt.status is not None
            statuses = mapper.legacy_statuses(system)
            seq = _sequence(n)
            status = sa.case({i: s for i, s in enumerate(statuses)}, value=seq.c.n % len(statuses))
            conn.execute(
                sa.insert(lt.table).from_select(
                    [
                        lt.id,
                        lt.user_id,
                        lt.amount,
                        lt.currency,
                        lt.status,
                        lt.created_at,
                        lt.updated_at,
                    ],
                    sa.select(
                        seq.c.n,
                        seq.c.n % 97 + 1,
                        seq.c.n * sa.literal(Decimal("1.25"), sa.Numeric(20, 8)),
                        sa.literal("USD"),
                        status,
                        sa.literal(T0, sa.DateTime(timezone=True)),
                        sa.literal(T0, sa.DateTime(timezone=True)),
                    ),
                )
            )
            insert_unified_from_legacy(conn, lt)


def insert_unified_from_legacy(conn: sa.Connection, lt: LegacyTable) -> None:
    assert lt.status is not None
    system = lt.system
    unified = forward_case(system, lt.status)
    conn.execute(
        sa.insert(U).from_select(
            [
                "id",
                "transaction_type",
                "legacy_system",
                "legacy_id",
                "user_id",
                "amount",
                "currency",
                "status",
                "legacy_status",
                "version",
                "origin",
                "created_at",
                "updated_at",
            ],
            sa.select(
                utx_id_sql(system, lt.id),
                sa.literal(system.transaction_type.value),
                sa.literal(system.value),
                lt.id,
                lt.user_id,
                lt.amount,
                lt.currency,
                unified,
                lt.status,
                sa.literal(1),
                sa.literal("backfill"),
                lt.created_at,
                lt.updated_at,
            ).where(unified.is_not(None)),
        )
    )


@dataclass(frozen=True)
class Damage:
    """Which ids of each system were damaged, and how (the expected check result)."""

    missing: frozenset[int]
    orphans: frozenset[int]
    status: frozenset[int]
    fields: frozenset[int]
    unmappable: frozenset[int]


SWAP = {
    LegacySystemType.CASHOUT: ("CANCELLED", "FAILED"),
    LegacySystemType.ESCROW: ("CANCELLED", "EXPIRED"),
    LegacySystemType.EXCHANGE: ("CANCELLED", "FAILED"),
}


def damage(engine: sa.Engine, settings: Settings, n: int) -> Damage:
    """Known differences, by id pattern, in every system (set-based statements)."""
    missing = frozenset(i for i in range(1, n + 1) if i % 10 == 1)
    status = frozenset(i for i in range(1, n + 1) if i % 10 == 2)
    fields = frozenset(i for i in range(1, n + 1) if i % 10 in (3, 2))  # 2: both kinds
    unmappable = frozenset(i for i in range(1, n + 1) if i % 10 == 4)
    orphans = frozenset(i for i in range(1, n + 1) if i % 10 == 5)
    with engine.begin() as conn:
        for system, lt in tables(engine, settings).items():
            assert lt.status is not None
            ref = sa.and_(U.c.legacy_system == system.value)
            conn.execute(sa.delete(U).where(ref, U.c.legacy_id % 10 == 1))
            # A status valid for the type that the legacy value is not compatible with.
            a, b = SWAP[system]
            conn.execute(
                sa.update(U)
                .where(ref, U.c.legacy_id % 10 == 2)
                .values(status=sa.case((U.c.status == a, b), else_=a), updated_at=T1)
            )
            conn.execute(
                sa.update(U).where(ref, U.c.legacy_id % 10 == 2).values(user_id=U.c.user_id + 1)
            )
            conn.execute(
                sa.update(U)
                .where(ref, U.c.legacy_id % 10 == 3)
                .values(
                    amount=U.c.amount + sa.literal(Decimal("0.00000001"), sa.Numeric(20, 8)),
                    updated_at=T1,
                )
            )
            conn.execute(
                sa.update(lt.table).where(lt.id % 10 == 4).values({lt.status.key: "bogus"})
            )
            conn.execute(sa.delete(lt.table).where(lt.id % 10 == 5))
    return Damage(missing, orphans, status, fields, unmappable)


def insert_case(
    conn: sa.Connection,
    lt: LegacyTable,
    legacy_id: int,
    legacy: dict[str, Any] | None,
    unified: dict[str, Any] | None,
    *,
    born_unified_id: str | None = None,
) -> str | None:
    """One hand-made pair; returns the unified id (if any)."""
    assert lt.status is not None
    if legacy is not None:
        row = {
            "user_id": 7,
            "amount": Decimal("10.5"),
            "currency": "USD",
            "updated_at": T0,
            **legacy,
        }
        conn.execute(
            sa.insert(lt.table).values(
                {
                    lt.id.key: legacy_id,
                    lt.user_id.key: row["user_id"],
                    lt.amount.key: row["amount"],
                    lt.currency.key: row["currency"],
                    lt.status.key: row["status"],
                    lt.created_at.key: T0,
                    lt.updated_at.key: row["updated_at"],
                }
            )
        )
    if unified is None:
        return None
    system = lt.system
    utx = born_unified_id or derive_utx_id(system, legacy_id)
    row = {
        "id": utx,
        "transaction_type": system.transaction_type.value,
        "legacy_system": system.value,
        "legacy_id": None if born_unified_id else legacy_id,
        "user_id": 7,
        "amount": Decimal("10.5"),
        "currency": "USD",
        # A correct row keeps the exact legacy status (a case overrides it to drift).
        "legacy_status": legacy["status"] if legacy is not None else None,
        "version": 1,
        "origin": "backfill",
        "created_at": T0,
        "updated_at": T0,
        **unified,
    }
    conn.execute(sa.insert(U).values(row))
    return utx
