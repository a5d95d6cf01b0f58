"""The service's business operations: each one is ONE database transaction.

Money moves (balance, ledger) and the status change commit together or not at all:
the adapter writes the status on the session's connection (``connection=session``)
and never commits itself. A refused status change (an invalid transition, say) raises
before anything is written, and ``session.begin()`` rolls back the rest.
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from payments_service.models import Account, LedgerEntry
from unistatus import DualWriteAdapter


class InsufficientFunds(Exception):
    """The user's balance does not cover the amount."""


class PaymentsService:
    def __init__(self, engine: sa.Engine, adapter: DualWriteAdapter) -> None:
        self.sessions = sessionmaker(engine)
        self.adapter = adapter

    # --- accounts -------------------------------------------------------------------

    def open_account(self, user_id: int, balance: Decimal) -> None:
        with self.sessions.begin() as session:
            session.add(Account(user_id=user_id, balance=balance))

    def balance(self, user_id: int) -> Decimal:
        with self.sessions() as session:
            account = session.get(Account, user_id)
            return account.balance if account else Decimal(0)

    # --- cashouts -------------------------------------------------------------------

    def request_cashout(
        self, user_id: int, amount: Decimal, currency: str, destination: str
    ) -> str:
        """Hold the amount and create the cashout; returns its transaction id."""
        with self.sessions.begin() as session:
            self._debit(session, user_id, amount)
            created_id = self._create(
                session, "WALLET_CASHOUT", user_id, amount, currency, destination=destination
            )
            self._ledger(session, user_id, created_id, -amount, "cashout hold")
            return created_id

    def approve_cashout(self, transaction_id: str) -> None:
        with self.sessions.begin() as session:
            self._status(session, transaction_id, "PROCESSING", "approved")

    def complete_cashout(self, transaction_id: str) -> None:
        with self.sessions.begin() as session:
            self._status(session, transaction_id, "SUCCESS", "paid out")

    def fail_cashout(self, transaction_id: str, user_id: int, amount: Decimal) -> None:
        """The payout failed: the status and the refund of the hold, together."""
        with self.sessions.begin() as session:
            self._status(session, transaction_id, "FAILED", "payout failed")
            self._credit(session, user_id, amount)
            self._ledger(session, user_id, transaction_id, amount, "cashout refund")

    def refund_cashout(self, transaction_id: str, user_id: int, amount: Decimal) -> None:
        """The user withdrew the request: REFUND_REQUESTED, a legacy value the service
        added after the 38, mapped in the config (``[mapping.CASHOUT]``) to CANCELLED."""
        with self.sessions.begin() as session:
            self._status(session, transaction_id, "REFUND_REQUESTED", "user withdrew")
            self._credit(session, user_id, amount)
            self._ledger(session, user_id, transaction_id, amount, "cashout refund")

    # --- escrows --------------------------------------------------------------------

    def open_escrow(self, buyer_id: int, seller_id: int, amount: Decimal, currency: str) -> str:
        with self.sessions.begin() as session:
            created_id = self._create(
                session, "ESCROW", buyer_id, amount, currency, seller_id=seller_id
            )
            return created_id

    def fund_escrow(self, transaction_id: str, buyer_id: int, amount: Decimal) -> None:
        with self.sessions.begin() as session:
            self._debit(session, buyer_id, amount)
            self._status(session, transaction_id, "AWAITING_PAYMENT", "buyer pays")
            self._status(session, transaction_id, "PAYMENT_CONFIRMED", "buyer paid")
            self._status(session, transaction_id, "FUNDS_HELD", "held for the seller")
            self._ledger(session, buyer_id, transaction_id, -amount, "escrow funded")

    def release_escrow(self, transaction_id: str, seller_id: int, amount: Decimal) -> None:
        with self.sessions.begin() as session:
            self._status(session, transaction_id, "SUCCESS", "released to the seller")
            self._credit(session, seller_id, amount)
            self._ledger(session, seller_id, transaction_id, amount, "escrow released")

    # --- exchanges ------------------------------------------------------------------

    def open_exchange(self, user_id: int, amount: Decimal, currency: str, pair: str) -> str:
        with self.sessions.begin() as session:
            created_id = self._create(session, "EXCHANGE", user_id, amount, currency, pair=pair)
            return created_id

    def settle_exchange(self, transaction_id: str, user_id: int, amount: Decimal) -> None:
        with self.sessions.begin() as session:
            self._status(session, transaction_id, "AWAITING_PAYMENT", "deposit address issued")
            self._status(session, transaction_id, "PAYMENT_CONFIRMED", "deposit seen")
            self._status(session, transaction_id, "PROCESSING", "converting")
            self._status(session, transaction_id, "SUCCESS", "converted")
            self._credit(session, user_id, amount)
            self._ledger(session, user_id, transaction_id, amount, "exchange proceeds")

    # --- within one transaction -----------------------------------------------------

    def _create(
        self,
        session: Session,
        transaction_type: str,
        user_id: int,
        amount: Decimal,
        currency: str,
        **legacy_values: object,
    ) -> str:
        """A new PENDING transaction; ``legacy_values``: the legacy row's own columns."""
        created = self.adapter.create_transaction(
            transaction_type,
            user_id,
            amount,
            currency,
            status="PENDING",
            triggered_by="payments-service",
            legacy_values=legacy_values,
            connection=session,
        )
        assert created.entity_id is not None
        return created.entity_id

    def _status(self, session: Session, transaction_id: str, status: str, reason: str) -> None:
        self.adapter.update_status(
            transaction_id, status, reason, "payments-service", connection=session
        )

    @staticmethod
    def _debit(session: Session, user_id: int, amount: Decimal) -> None:
        account = session.get(Account, user_id, with_for_update=True)
        if account is None or account.balance < amount:
            raise InsufficientFunds(user_id)
        account.balance -= amount

    @staticmethod
    def _credit(session: Session, user_id: int, amount: Decimal) -> None:
        account = session.get(Account, user_id, with_for_update=True)
        if account is None:
            session.add(Account(user_id=user_id, balance=amount))
        else:
            account.balance += amount

    @staticmethod
    def _ledger(
        session: Session, user_id: int, transaction_id: str, amount: Decimal, memo: str
    ) -> None:
        session.add(
            LedgerEntry(user_id=user_id, transaction_id=transaction_id, amount=amount, memo=memo)
        )
