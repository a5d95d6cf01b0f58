"""The allowed status changes per transaction type (the spec's tables, as data)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, StrEnum
from typing import Any

import sqlalchemy as sa

from unistatus.domain.mapping import LegacyStatusMapper, pair_in
from unistatus.domain.statuses import UnifiedTransactionStatus as U
from unistatus.domain.statuses import UnifiedTransactionType as T
from unistatus.errors import InputError, InvalidTransitionError

TRANSITIONS: Mapping[T, Mapping[U, frozenset[U]]] = {
    T.WALLET_CASHOUT: {
        U.PENDING: frozenset(
            {
                U.OTP_PENDING,
                U.AWAITING_APPROVAL,
                U.ADMIN_PENDING,
                U.FUNDS_HELD,
                U.PROCESSING,
                U.FAILED,
                U.CANCELLED,
                U.EXPIRED,
            }
        ),
        U.OTP_PENDING: frozenset(
            {
                U.AWAITING_APPROVAL,
                U.ADMIN_PENDING,
                U.FUNDS_HELD,
                U.PROCESSING,
                U.FAILED,
                U.CANCELLED,
                U.EXPIRED,
            }
        ),
        U.AWAITING_APPROVAL: frozenset(
            {
                U.OTP_PENDING,
                U.ADMIN_PENDING,
                U.FUNDS_HELD,
                U.PROCESSING,
                U.FAILED,
                U.CANCELLED,
                U.EXPIRED,
            }
        ),
        U.ADMIN_PENDING: frozenset({U.FUNDS_HELD, U.PROCESSING, U.FAILED, U.CANCELLED, U.EXPIRED}),
        U.FUNDS_HELD: frozenset({U.PROCESSING, U.FAILED, U.CANCELLED}),
        U.PROCESSING: frozenset({U.AWAITING_RESPONSE, U.SUCCESS, U.FAILED}),
        U.AWAITING_RESPONSE: frozenset({U.PROCESSING, U.SUCCESS, U.FAILED}),
    },
    T.ESCROW: {
        U.PENDING: frozenset({U.AWAITING_PAYMENT, U.AWAITING_APPROVAL, U.CANCELLED, U.EXPIRED}),
        U.AWAITING_APPROVAL: frozenset(
            {U.AWAITING_PAYMENT, U.PAYMENT_CONFIRMED, U.FUNDS_HELD, U.CANCELLED, U.EXPIRED}
        ),
        U.AWAITING_PAYMENT: frozenset(
            {U.PARTIAL_PAYMENT, U.PAYMENT_CONFIRMED, U.AWAITING_APPROVAL, U.CANCELLED, U.EXPIRED}
        ),
        U.PARTIAL_PAYMENT: frozenset(
            {U.AWAITING_PAYMENT, U.PAYMENT_CONFIRMED, U.CANCELLED, U.EXPIRED}
        ),
        U.PAYMENT_CONFIRMED: frozenset({U.AWAITING_APPROVAL, U.FUNDS_HELD, U.CANCELLED}),
        U.FUNDS_HELD: frozenset({U.RELEASE_PENDING, U.SUCCESS, U.DISPUTED, U.CANCELLED}),
        U.RELEASE_PENDING: frozenset({U.SUCCESS, U.DISPUTED, U.FUNDS_HELD}),
        U.DISPUTED: frozenset({U.FUNDS_HELD, U.RELEASE_PENDING, U.SUCCESS, U.CANCELLED}),
    },
    T.EXCHANGE: {
        U.PENDING: frozenset({U.AWAITING_PAYMENT, U.ADMIN_PENDING, U.FAILED, U.CANCELLED}),
        U.AWAITING_PAYMENT: frozenset({U.PAYMENT_CONFIRMED, U.FAILED, U.CANCELLED}),
        U.PAYMENT_CONFIRMED: frozenset({U.ADMIN_PENDING, U.PROCESSING, U.FAILED, U.CANCELLED}),
        U.ADMIN_PENDING: frozenset({U.PROCESSING, U.FAILED, U.CANCELLED}),
        U.PROCESSING: frozenset({U.SUCCESS, U.FAILED}),
    },
}


class TransitionKind(StrEnum):
    """How a requested change was judged."""

    NOOP = "noop"  # same status: nothing to write
    ALLOWED = "allowed"  # listed in the spec
    OVERRIDE = "override"  # not listed, forced by an admin with a reason


class TransitionRules:
    """Answers which unified status changes are allowed for a transaction type."""

    def __init__(self) -> None:
        self._mapper = LegacyStatusMapper()

    def allowed(self, transaction_type: T | str, from_status: U | str) -> frozenset[U]:
        ttype = T(_v(transaction_type))
        return TRANSITIONS[ttype].get(U(_v(from_status)), frozenset())

    def allowed_from(self, transaction_type: T | str, to_status: U | str) -> frozenset[U]:
        """Every status from which ``to_status`` may be reached (for conditional SQL)."""
        ttype, target = T(_v(transaction_type)), U(_v(to_status))
        return frozenset(f for f, targets in TRANSITIONS[ttype].items() if target in targets)

    def check(
        self,
        transaction_type: T | str,
        from_status: U | str,
        to_status: U | str,
        *,
        force: bool = False,
        reason: str | None = None,
    ) -> TransitionKind:
        """Judge a change; raise InvalidTransitionError when it is not allowed.

        Both statuses must be valid for the type even when forced: a status without a
        legacy image (OTP_PENDING on an escrow) cannot be written at all.
        """
        ttype = T(_v(transaction_type))
        src = self._mapper.parse_unified(ttype, from_status)
        dst = self._mapper.parse_unified(ttype, to_status)
        if src is dst:
            return TransitionKind.NOOP
        allowed = self.allowed(ttype, src)
        if dst in allowed:
            return TransitionKind.ALLOWED
        if force:
            if not reason or not reason.strip():
                raise InputError(
                    f"forcing {ttype.value} from {src.value} to {dst.value} is an admin "
                    "override and needs a reason"
                )
            return TransitionKind.OVERRIDE
        raise InvalidTransitionError(ttype.value, src.value, dst.value, [a.value for a in allowed])

    def graph(self, transaction_type: T | str) -> dict[str, list[str]]:
        """The transition table as plain data (for `unistatus mapping` and docs)."""
        ttype = T(_v(transaction_type))
        return {f.value: sorted(t.value for t in ts) for f, ts in TRANSITIONS[ttype].items()}


def allowed_pairs(transaction_type: T) -> list[tuple[str, str]]:
    """Every (from, to) change the rules allow for the type, as plain strings."""
    return sorted(
        (src.value, dst.value)
        for src, targets in TRANSITIONS[transaction_type].items()
        for dst in targets
    )


def allowed_clause(
    transaction_type: T,
    from_col: sa.ColumnElement[Any],
    to_col: sa.ColumnElement[Any],
) -> sa.ColumnElement[bool]:
    """SQL form of :meth:`TransitionRules.check` without ``force``: true when the change
    is allowed or no change at all (the capture triggers flag the rest)."""
    return sa.or_(from_col == to_col, pair_in(from_col, to_col, allowed_pairs(transaction_type)))


def _v(x: object) -> str:
    return str(x.value) if isinstance(x, Enum) else str(x)
