"""The service's own tables, as its ORM sees them.

The three legacy tables carry the columns unistatus reads (``id``, ``status``,
``user_id``, ``amount``, ``currency``, ``created_at``, ``updated_at``) plus one column of
the service's own each, required (NOT NULL, no default): unistatus never owns them, the
service passes them through ``legacy_values=``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Money = sa.Numeric(20, 8)
# BIGINT ids as production has them; SQLite only auto-increments an INTEGER primary key.
LegacyId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    user_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    balance: Mapped[Decimal] = mapped_column(Money)


class LedgerEntry(Base):
    """One movement of money; the sum per user is the balance's history."""

    __tablename__ = "ledger"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    transaction_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    memo: Mapped[str] = mapped_column(sa.String(120))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=now)


class _LegacyRow:
    """What every legacy payment table has (and unistatus reads)."""

    id: Mapped[int] = mapped_column(LegacyId, primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.BigInteger)
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(sa.String(10))
    status: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=now)


class Cashout(_LegacyRow, Base):
    __tablename__ = "cashouts"
    destination: Mapped[str] = mapped_column(sa.String(120))  # the wallet address paid


class Escrow(_LegacyRow, Base):
    __tablename__ = "escrows"
    seller_id: Mapped[int] = mapped_column(sa.BigInteger)


class Exchange(_LegacyRow, Base):
    __tablename__ = "exchanges"
    pair: Mapped[str] = mapped_column(sa.String(20))  # e.g. "BTC/USDT"
