"""The status vocabularies: 38 legacy values in three systems, 16 unified values."""

from __future__ import annotations

from enum import Enum, StrEnum

from unistatus.errors import InputError


class CashoutStatus(StrEnum):
    PENDING = "PENDING"
    OTP_PENDING = "OTP_PENDING"
    USER_CONFIRM_PENDING = "USER_CONFIRM_PENDING"
    ADMIN_PENDING = "ADMIN_PENDING"
    PENDING_ADDRESS_CONFIG = "PENDING_ADDRESS_CONFIG"
    PENDING_SERVICE_FUNDING = "PENDING_SERVICE_FUNDING"
    APPROVED = "APPROVED"
    EXECUTING = "EXECUTING"
    AWAITING_RESPONSE = "AWAITING_RESPONSE"
    SUCCESS = "SUCCESS"
    COMPLETED = "COMPLETED"  # deprecated legacy value
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class EscrowStatus(StrEnum):
    CREATED = "CREATED"
    PAYMENT_PENDING = "PAYMENT_PENDING"
    PAYMENT_CONFIRMED = "PAYMENT_CONFIRMED"
    PARTIAL_PAYMENT = "PARTIAL_PAYMENT"
    AWAITING_SELLER = "AWAITING_SELLER"
    PENDING_SELLER = "PENDING_SELLER"
    PENDING_DEPOSIT = "PENDING_DEPOSIT"
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    DISPUTED = "DISPUTED"
    CANCELLED = "CANCELLED"
    REFUNDED = "REFUNDED"
    EXPIRED = "EXPIRED"


class ExchangeStatus(StrEnum):
    CREATED = "CREATED"
    AWAITING_DEPOSIT = "AWAITING_DEPOSIT"
    RATE_LOCKED = "RATE_LOCKED"
    PAYMENT_RECEIVED = "PAYMENT_RECEIVED"
    PAYMENT_CONFIRMED = "PAYMENT_CONFIRMED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    ADDRESS_GENERATION_FAILED = "ADDRESS_GENERATION_FAILED"
    PENDING_APPROVAL = "PENDING_APPROVAL"


class StatusPhase(StrEnum):
    INITIATION = "initiation"
    AUTHORIZATION = "authorization"
    PROCESSING = "processing"
    TERMINAL = "terminal"


class UnifiedTransactionStatus(StrEnum):
    PENDING = "PENDING"
    AWAITING_PAYMENT = "AWAITING_PAYMENT"
    PAYMENT_CONFIRMED = "PAYMENT_CONFIRMED"
    FUNDS_HELD = "FUNDS_HELD"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    OTP_PENDING = "OTP_PENDING"
    ADMIN_PENDING = "ADMIN_PENDING"
    PROCESSING = "PROCESSING"
    AWAITING_RESPONSE = "AWAITING_RESPONSE"
    RELEASE_PENDING = "RELEASE_PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    DISPUTED = "DISPUTED"
    EXPIRED = "EXPIRED"
    PARTIAL_PAYMENT = "PARTIAL_PAYMENT"

    @property
    def phase(self) -> StatusPhase:
        return _PHASES[self]

    @property
    def is_final(self) -> bool:
        """Nothing leaves a final status except an audited admin override."""
        return self in _FINAL


_U = UnifiedTransactionStatus
_PHASES: dict[UnifiedTransactionStatus, StatusPhase] = {
    **dict.fromkeys(
        (_U.PENDING, _U.AWAITING_PAYMENT, _U.PAYMENT_CONFIRMED), StatusPhase.INITIATION
    ),
    **dict.fromkeys(
        (_U.FUNDS_HELD, _U.AWAITING_APPROVAL, _U.OTP_PENDING, _U.ADMIN_PENDING),
        StatusPhase.AUTHORIZATION,
    ),
    **dict.fromkeys(
        (_U.PROCESSING, _U.AWAITING_RESPONSE, _U.RELEASE_PENDING), StatusPhase.PROCESSING
    ),
    **dict.fromkeys(
        (_U.SUCCESS, _U.FAILED, _U.CANCELLED, _U.DISPUTED, _U.EXPIRED, _U.PARTIAL_PAYMENT),
        StatusPhase.TERMINAL,
    ),
}
_FINAL = frozenset({_U.SUCCESS, _U.FAILED, _U.CANCELLED, _U.EXPIRED})


class UnifiedTransactionType(StrEnum):
    WALLET_CASHOUT = "WALLET_CASHOUT"
    ESCROW = "ESCROW"
    EXCHANGE = "EXCHANGE"

    @property
    def legacy_system(self) -> LegacySystemType:
        return LegacySystemType[_TYPE_TO_SYSTEM[self.value]]


class LegacySystemType(StrEnum):
    CASHOUT = "CASHOUT"
    ESCROW = "ESCROW"
    EXCHANGE = "EXCHANGE"

    @property
    def transaction_type(self) -> UnifiedTransactionType:
        return UnifiedTransactionType[_SYSTEM_TO_TYPE[self.value]]

    @property
    def status_enum(self) -> type[Enum]:
        return _STATUS_ENUMS[self.value]

    @classmethod
    def parse(cls, value: str | LegacySystemType) -> LegacySystemType:
        """Accept CASHOUT / cashout / cashouts (the CLI's spelling) and the enum itself."""
        if isinstance(value, LegacySystemType):
            return value
        key = str(value).strip().upper()
        key = key[:-1] if key.endswith("S") and key[:-1] in cls.__members__ else key
        try:
            return cls[key]
        except KeyError:
            raise InputError(
                f"unknown legacy system {value!r}; expected one of: cashout, escrow, exchange"
            ) from None


_TYPE_TO_SYSTEM = {"WALLET_CASHOUT": "CASHOUT", "ESCROW": "ESCROW", "EXCHANGE": "EXCHANGE"}
_SYSTEM_TO_TYPE = {v: k for k, v in _TYPE_TO_SYSTEM.items()}
_STATUS_ENUMS: dict[str, type[Enum]] = {
    "CASHOUT": CashoutStatus,
    "ESCROW": EscrowStatus,
    "EXCHANGE": ExchangeStatus,
}


class DualWriteMode(StrEnum):
    LEGACY_ONLY = "LEGACY_ONLY"
    DUAL_WRITE_LEGACY_PRIMARY = "DUAL_WRITE_LEGACY_PRIMARY"
    DUAL_WRITE_UNIFIED_PRIMARY = "DUAL_WRITE_UNIFIED_PRIMARY"
    UNIFIED_ONLY = "UNIFIED_ONLY"

    @property
    def writes_legacy(self) -> bool:
        return self is not DualWriteMode.UNIFIED_ONLY

    @property
    def writes_unified(self) -> bool:
        return self is not DualWriteMode.LEGACY_ONLY

    @property
    def is_dual(self) -> bool:
        return self.writes_legacy and self.writes_unified

    @property
    def reads_unified(self) -> bool:
        """Which side is authoritative for reads (and checked first on writes)."""
        return self in (DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, DualWriteMode.UNIFIED_ONLY)

    @classmethod
    def parse(cls, value: str | DualWriteMode) -> DualWriteMode:
        if isinstance(value, DualWriteMode):
            return value
        key = str(value).strip().upper().replace("-", "_")
        try:
            return cls[key]
        except KeyError:
            raise InputError(
                f"unknown mode {value!r}; expected one of: {', '.join(m.value for m in cls)}"
            ) from None
