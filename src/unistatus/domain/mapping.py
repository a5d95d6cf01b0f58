"""The status mapping, held once as data, and everything derived from it.

`FORWARD` (legacy -> unified, per system) and `CANONICAL_REVERSE` (unified -> legacy,
per transaction type) are the tables of ``docs/status-model.md``. The mapper
answers questions about them in Python; :func:`forward_case` and friends turn the same
tables into SQL expressions for set-based backfill and checks.

A deployment's own legacy values beyond the 38 (the config's ``[mapping.CASHOUT]``) are
registered once per process (:func:`register_extra_statuses`, called by loading the
settings) and from then on are part of the forward table every one of these answers
from; the reverse stays canonical. Why a process-wide registration: the "Extra legacy
values" section of ``docs/status-model.md``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import sqlalchemy as sa

from unistatus.domain.statuses import (
    CashoutStatus as C,
)
from unistatus.domain.statuses import (
    EscrowStatus as E,
)
from unistatus.domain.statuses import (
    ExchangeStatus as X,
)
from unistatus.domain.statuses import (
    LegacySystemType,
    UnifiedTransactionType,
)
from unistatus.domain.statuses import (
    UnifiedTransactionStatus as U,
)
from unistatus.errors import ConfigError, InputError, InvalidStatusError, UnmappableStatusError

LegacyStatus = C | E | X

FORWARD: Mapping[LegacySystemType, Mapping[str, U]] = {
    LegacySystemType.CASHOUT: {
        C.PENDING: U.PENDING,
        C.OTP_PENDING: U.OTP_PENDING,
        C.USER_CONFIRM_PENDING: U.AWAITING_APPROVAL,
        C.ADMIN_PENDING: U.ADMIN_PENDING,
        C.PENDING_ADDRESS_CONFIG: U.ADMIN_PENDING,
        C.PENDING_SERVICE_FUNDING: U.ADMIN_PENDING,
        C.APPROVED: U.FUNDS_HELD,
        C.EXECUTING: U.PROCESSING,
        C.AWAITING_RESPONSE: U.AWAITING_RESPONSE,
        C.SUCCESS: U.SUCCESS,
        C.COMPLETED: U.SUCCESS,
        C.FAILED: U.FAILED,
        C.CANCELLED: U.CANCELLED,
        C.EXPIRED: U.EXPIRED,
    },
    LegacySystemType.ESCROW: {
        E.CREATED: U.PENDING,
        E.PAYMENT_PENDING: U.AWAITING_PAYMENT,
        E.PAYMENT_CONFIRMED: U.PAYMENT_CONFIRMED,
        E.PARTIAL_PAYMENT: U.PARTIAL_PAYMENT,
        E.AWAITING_SELLER: U.AWAITING_APPROVAL,
        E.PENDING_SELLER: U.AWAITING_APPROVAL,
        E.PENDING_DEPOSIT: U.AWAITING_PAYMENT,
        E.ACTIVE: U.FUNDS_HELD,
        E.COMPLETED: U.SUCCESS,
        E.DISPUTED: U.DISPUTED,
        E.CANCELLED: U.CANCELLED,
        E.REFUNDED: U.CANCELLED,
        E.EXPIRED: U.EXPIRED,
    },
    LegacySystemType.EXCHANGE: {
        X.CREATED: U.PENDING,
        X.AWAITING_DEPOSIT: U.AWAITING_PAYMENT,
        X.RATE_LOCKED: U.PENDING,
        X.PAYMENT_RECEIVED: U.PAYMENT_CONFIRMED,
        X.PAYMENT_CONFIRMED: U.PAYMENT_CONFIRMED,
        X.PROCESSING: U.PROCESSING,
        X.COMPLETED: U.SUCCESS,
        X.FAILED: U.FAILED,
        X.CANCELLED: U.CANCELLED,
        X.ADDRESS_GENERATION_FAILED: U.FAILED,
        X.PENDING_APPROVAL: U.ADMIN_PENDING,
    },
}

CANONICAL_REVERSE: Mapping[UnifiedTransactionType, Mapping[U, str]] = {
    UnifiedTransactionType.WALLET_CASHOUT: {
        U.PENDING: C.PENDING,
        U.OTP_PENDING: C.OTP_PENDING,
        U.AWAITING_APPROVAL: C.USER_CONFIRM_PENDING,
        U.ADMIN_PENDING: C.ADMIN_PENDING,
        U.FUNDS_HELD: C.APPROVED,
        U.PROCESSING: C.EXECUTING,
        U.AWAITING_RESPONSE: C.AWAITING_RESPONSE,
        U.SUCCESS: C.SUCCESS,
        U.FAILED: C.FAILED,
        U.CANCELLED: C.CANCELLED,
        U.EXPIRED: C.EXPIRED,
    },
    UnifiedTransactionType.ESCROW: {
        U.PENDING: E.CREATED,
        U.AWAITING_PAYMENT: E.PAYMENT_PENDING,
        U.PAYMENT_CONFIRMED: E.PAYMENT_CONFIRMED,
        U.PARTIAL_PAYMENT: E.PARTIAL_PAYMENT,
        U.AWAITING_APPROVAL: E.AWAITING_SELLER,
        U.FUNDS_HELD: E.ACTIVE,
        U.RELEASE_PENDING: E.ACTIVE,  # unified-only refinement of ACTIVE
        U.SUCCESS: E.COMPLETED,
        U.DISPUTED: E.DISPUTED,
        U.CANCELLED: E.CANCELLED,
        U.EXPIRED: E.EXPIRED,
    },
    UnifiedTransactionType.EXCHANGE: {
        U.PENDING: X.CREATED,
        U.AWAITING_PAYMENT: X.AWAITING_DEPOSIT,
        U.PAYMENT_CONFIRMED: X.PAYMENT_CONFIRMED,
        U.ADMIN_PENDING: X.PENDING_APPROVAL,
        U.PROCESSING: X.PROCESSING,
        U.SUCCESS: X.COMPLETED,
        U.FAILED: X.FAILED,
        U.CANCELLED: X.CANCELLED,
    },
}

# The plain-string views the hot paths use (no Enum hashing per call). _FORWARD_STR also
# holds the extra legacy values registered in this process (see register_extra_statuses):
# each system's dict is replaced whole, never changed in place, so a reader iterating one
# (a CASE being generated) never sees it change under it.
_BUILTIN_FORWARD_STR: Mapping[LegacySystemType, Mapping[str, str]] = {
    s: {str(k.value if isinstance(k, Enum) else k): v.value for k, v in m.items()}
    for s, m in FORWARD.items()
}
_FORWARD_STR: dict[LegacySystemType, dict[str, str]] = {
    s: dict(m) for s, m in _BUILTIN_FORWARD_STR.items()
}
_REVERSE_STR: dict[UnifiedTransactionType, dict[str, str]] = {
    t: {k.value: str(v.value if isinstance(v, Enum) else v) for k, v in m.items()}
    for t, m in CANONICAL_REVERSE.items()
}


def _value(x: object) -> str:
    return str(x.value) if isinstance(x, Enum) else str(x)


# --- Extra legacy values: the deployment's own, beyond the 38 ----------------------------

# unified_transactions.legacy_status and the history's legacy columns are VARCHAR(64).
MAX_LEGACY_STATUS_CHARS = 64
_LEGACY_VALUE = re.compile(r"[A-Z0-9][A-Z0-9_.-]*")
_REGISTRATION = threading.Lock()


def _new_lock_after_fork() -> None:
    global _REGISTRATION
    _REGISTRATION = threading.Lock()  # a thread of the parent may have held it


os.register_at_fork(after_in_child=_new_lock_after_fork)

ExtraStatuses = Mapping[Any, Mapping[Any, Any]]
"""``{system: {legacy value: unified status}}``, as the config's ``[mapping.CASHOUT]``."""


def check_extra_statuses(extras: ExtraStatuses) -> dict[LegacySystemType, dict[str, str]]:
    """The extra legacy values per system, checked; ConfigError naming the first bad one.

    Nothing is registered. An extra value is a new spelling of one of its type's unified
    statuses, never a change of the built-in mapping: it must be upper case like every
    legacy value (a lower-case row stays a wrong_case quarantine), not a built-in value,
    mapped once, and map to a unified status valid for its type (one that has a legacy
    image). A value spelled like a unified status of its type must map to that status,
    or ``update_status("X")`` would mean two things.
    """
    checked: dict[LegacySystemType, dict[str, str]] = {}
    spelled: dict[tuple[LegacySystemType, str], str] = {}
    for key, values in extras.items():
        try:
            system = LegacySystemType.parse(str(key))
        except InputError:
            raise ConfigError(
                f"{key}: unknown legacy system {key!r} (cashout, escrow, exchange)"
            ) from None
        if not isinstance(values, Mapping):
            raise ConfigError(f'{key}: expected a table of LEGACY_VALUE = "UNIFIED_STATUS" entries')
        for legacy, unified in values.items():
            where = f"{key}.{legacy}"
            _check_extra_value(system, str(legacy), where)
            target = _check_extra_target(system, str(legacy), unified, where)
            first = spelled.setdefault((system, str(legacy)), where)
            if first != where:
                raise ConfigError(
                    f"{where}: {system.value}.{legacy} is mapped twice (also as {first})"
                )
            checked.setdefault(system, {})[str(legacy)] = target
    return checked


def _check_extra_value(system: LegacySystemType, legacy: str, where: str) -> None:
    if legacy != legacy.upper():
        raise ConfigError(
            f"{where}: the legacy value {legacy!r} is not upper case; legacy values are upper "
            "case, and a lower-case row is quarantined as wrong_case, never mapped (in the "
            "environment, give the mapping as JSON in UNISTATUS_MAPPING: nested variable "
            "names lose their case)"
        )
    if len(legacy) > MAX_LEGACY_STATUS_CHARS or not _LEGACY_VALUE.fullmatch(legacy):
        raise ConfigError(
            f"{where}: the legacy value {legacy!r} must be 1-{MAX_LEGACY_STATUS_CHARS} "
            "characters A-Z, 0-9, '_', '.' or '-', starting with a letter or digit"
        )
    builtin = _BUILTIN_FORWARD_STR[system].get(legacy)
    if builtin is not None:
        raise ConfigError(
            f"{where}: {legacy} is already a legacy value of {system.value}, mapped to "
            f"{builtin} by the built-in mapping, which the config cannot change"
        )


def _check_extra_target(system: LegacySystemType, legacy: str, unified: object, where: str) -> str:
    ttype = system.transaction_type
    valid = _REVERSE_STR[ttype]
    target = unified if isinstance(unified, str) else None
    if target not in U.__members__:
        raise ConfigError(
            f"{where}: unknown unified status {unified!r}; one of: {', '.join(u.value for u in U)}"
        )
    assert target is not None
    if target not in valid:
        raise ConfigError(
            f"{where}: {target} is not a status of {ttype.value} transactions (it has no "
            f"legacy image in {system.value}); one of: {', '.join(valid)}"
        )
    if legacy in valid and legacy != target:
        raise ConfigError(
            f"{where}: {legacy} is also a unified status of {ttype.value} transactions; as a "
            f"legacy value it can only map to {legacy} (a status change to {legacy!r} "
            "would otherwise mean two things)"
        )
    return target


def register_extra_statuses(extras: ExtraStatuses) -> dict[LegacySystemType, dict[str, str]]:
    """Make the extra legacy values part of this process's mapping (all or none).

    Loading :class:`unistatus.config.Settings` calls this with its ``mapping``; a library
    user who maps statuses without settings calls it once at start. Registering the same
    values again changes nothing; a value already registered with another unified status
    is a ConfigError (one process holds one mapping). Values are added, never removed:
    the mapping of a process only grows.
    """
    checked = check_extra_statuses(extras)
    with _REGISTRATION:
        for system, values in checked.items():
            for legacy, target in values.items():
                known = _FORWARD_STR[system].get(legacy)
                if known is not None and known != target:
                    raise ConfigError(
                        f"{system.value}.{legacy}: already mapped to {known} in this "
                        f"process, so it cannot map to {target} (every configuration a "
                        "process loads must agree)"
                    )
        for system, values in checked.items():
            if any(legacy not in _FORWARD_STR[system] for legacy in values):
                _FORWARD_STR[system] = {**_FORWARD_STR[system], **values}
    return checked


def extra_statuses() -> dict[LegacySystemType, dict[str, str]]:
    """The extra legacy values registered in this process, per system (a copy)."""
    return {
        s: {k: v for k, v in _FORWARD_STR[s].items() if k not in _BUILTIN_FORWARD_STR[s]}
        for s in LegacySystemType
    }


@dataclass
class MappingValidationReport:
    """What :meth:`LegacyStatusMapper.validate` found. ``ok`` only when nothing is wrong."""

    legacy_counts: dict[str, int] = field(default_factory=dict)
    legacy_mapped: dict[str, int] = field(default_factory=dict)
    unified_reachable: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # The extra legacy values registered in this process (counted in legacy_counts too).
    extra: list[dict[str, str]] = field(default_factory=list)

    @property
    def total_legacy(self) -> int:
        return sum(self.legacy_counts.values())

    @property
    def total_mapped(self) -> int:
        return sum(self.legacy_mapped.values())

    @property
    def coverage(self) -> float:
        return self.total_mapped / self.total_legacy if self.total_legacy else 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and self.coverage == 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "coverage": self.coverage,
            "total_legacy": self.total_legacy,
            "total_mapped": self.total_mapped,
            "legacy": {
                s: {"statuses": n, "mapped": self.legacy_mapped.get(s, 0)}
                for s, n in self.legacy_counts.items()
            },
            "extra": [dict(row) for row in self.extra],
            "unified_reachable": len(self.unified_reachable),
            "unified_total": len(U),
            "problems": list(self.problems),
        }


class LegacyStatusMapper:
    """Bidirectional mapping between the three legacy vocabularies and the unified one."""

    def to_unified(self, system: LegacySystemType | str, legacy_status: object) -> U:
        """The unified status of a legacy value; raises UnmappableStatusError if unknown."""
        system = LegacySystemType.parse(system)
        if legacy_status is None:
            raise UnmappableStatusError(system.value, None)
        unified = _FORWARD_STR[system].get(_value(legacy_status))
        if unified is None:
            raise UnmappableStatusError(system.value, legacy_status)
        return U(unified)

    def try_to_unified(self, system: LegacySystemType, legacy_status: object) -> U | None:
        """Like :meth:`to_unified` but None for an unmappable value."""
        if legacy_status is None:
            return None
        unified = _FORWARD_STR[system].get(_value(legacy_status))
        return U(unified) if unified is not None else None

    def to_legacy(
        self,
        transaction_type: UnifiedTransactionType | str,
        unified_status: U | str,
        current: object | None = None,
    ) -> str:
        """The legacy value to write for a unified status.

        Keeps ``current`` when it already maps to ``unified_status`` (an escrow in
        PENDING_SELLER stays PENDING_SELLER on AWAITING_APPROVAL); otherwise canonical.
        """
        ttype = UnifiedTransactionType(_value(transaction_type))
        ustatus = self.parse_unified(ttype, unified_status)
        if current is not None:
            cur = _value(current)
            if _FORWARD_STR[ttype.legacy_system].get(cur) == ustatus.value:
                return cur
        return _REVERSE_STR[ttype][ustatus.value]

    def parse_unified(self, transaction_type: UnifiedTransactionType, status: object) -> U:
        """Parse a unified status and check it is valid for the type."""
        valid = _REVERSE_STR[transaction_type]
        key = _value(status)
        if key not in valid:
            raise InvalidStatusError(transaction_type.value, status, valid)
        return U(key)

    def is_compatible(
        self, system: LegacySystemType | str, legacy_status: object, unified_status: object
    ) -> bool:
        """The spec's rule: forward(ls) == u, or reverse(u) == ls (refinements)."""
        system = LegacySystemType.parse(system)
        if legacy_status is None or unified_status is None:
            return False
        ls, us = _value(legacy_status), _value(unified_status)
        if _FORWARD_STR[system].get(ls) == us:
            return True
        return _REVERSE_STR[system.transaction_type].get(us) == ls

    def is_valid_unified(self, transaction_type: UnifiedTransactionType, value: str) -> bool:
        """Whether ``value`` is a unified status valid for the type (no copies: hot path)."""
        return value in _REVERSE_STR[transaction_type]

    def is_legacy_status(self, system: LegacySystemType, value: str) -> bool:
        """Whether ``value`` is one of the system's legacy statuses (no copies: hot path)."""
        return value in _FORWARD_STR[system]

    def valid_statuses(self, transaction_type: UnifiedTransactionType | str) -> frozenset[U]:
        ttype = UnifiedTransactionType(_value(transaction_type))
        return frozenset(U(v) for v in _REVERSE_STR[ttype])

    def legacy_statuses(self, system: LegacySystemType | str) -> list[str]:
        return list(_FORWARD_STR[LegacySystemType.parse(system)])

    def forward_table(self, system: LegacySystemType) -> dict[str, str]:
        """legacy value -> unified value, as plain strings (for SQL generation)."""
        return dict(_FORWARD_STR[system])

    def reverse_table(self, transaction_type: UnifiedTransactionType) -> dict[str, str]:
        return dict(_REVERSE_STR[transaction_type])

    def validate(self) -> MappingValidationReport:
        report = MappingValidationReport()
        reachable: set[str] = set()
        extras = extra_statuses()
        for system in LegacySystemType:
            enum_values = [m.value for m in system.status_enum] + list(extras[system])
            report.extra += [
                {"system": system.value, "legacy": legacy, "unified": unified}
                for legacy, unified in extras[system].items()
            ]
            report.legacy_counts[system.value] = len(enum_values)
            mapped = [v for v in enum_values if v in _FORWARD_STR[system]]
            report.legacy_mapped[system.value] = len(mapped)
            for v in enum_values:
                if v not in _FORWARD_STR[system]:
                    report.problems.append(f"{system.value}.{v} has no unified mapping")
            ttype = system.transaction_type
            reverse = _REVERSE_STR[ttype]
            for legacy, unified in _FORWARD_STR[system].items():
                reachable.add(unified)
                if unified not in reverse:
                    report.problems.append(
                        f"{system.value}.{legacy} maps to {unified}, which has no reverse for "
                        f"{ttype.value}"
                    )
            for unified, legacy in reverse.items():
                reachable.add(unified)
                if legacy not in _FORWARD_STR[system]:
                    report.problems.append(
                        f"{ttype.value}: {unified} reverses to unknown legacy value {legacy}"
                    )
                elif not self.is_compatible(system, legacy, unified):
                    report.problems.append(
                        f"{ttype.value}: forward(reverse({unified})) = "
                        f"{_FORWARD_STR[system][legacy]} is not compatible with {unified}"
                    )
        report.unified_reachable = sorted(reachable)
        for u in U:
            if u.value not in reachable:
                report.problems.append(f"unified status {u.value} is not reachable")
        return report


# --- SQL generated from the same tables ---------------------------------------------


def forward_case(system: LegacySystemType, legacy_col: sa.ColumnElement[Any]) -> sa.Case[Any]:
    """CASE legacy_col WHEN 'PENDING' THEN 'PENDING' ... ELSE NULL END (NULL = unmappable).

    Built from the table at call time, so it holds every extra value registered so far.
    """
    return sa.case(_FORWARD_STR[system], value=legacy_col, else_=sa.null())


def reverse_case(
    transaction_type: UnifiedTransactionType, unified_col: sa.ColumnElement[Any]
) -> sa.Case[Any]:
    """CASE unified_col WHEN ... THEN canonical legacy ... ELSE NULL END."""
    return sa.case(_REVERSE_STR[transaction_type], value=unified_col, else_=sa.null())


def compatible_clause(
    system: LegacySystemType,
    legacy_col: sa.ColumnElement[Any],
    unified_col: sa.ColumnElement[Any],
) -> sa.ColumnElement[bool]:
    """SQL form of :meth:`LegacyStatusMapper.is_compatible` (NULLs are never compatible).

    Written as an explicit list of compatible (legacy, unified) pairs (:func:`pair_in`)
    so that it is plain SQL on every dialect and shares its truth table with the Python
    rule.
    """
    return pair_in(legacy_col, unified_col, compatible_pairs(system))


def compatible_pairs(system: LegacySystemType) -> list[tuple[str, str]]:
    ttype = system.transaction_type
    pairs = set(_FORWARD_STR[system].items())
    pairs |= {(legacy, unified) for unified, legacy in _REVERSE_STR[ttype].items()}
    return sorted(pairs)


def pair_in(
    first: sa.ColumnElement[Any], second: sa.ColumnElement[Any], pairs: list[tuple[str, str]]
) -> sa.ColumnElement[bool]:
    """SQL: ``(first, second)`` is one of ``pairs`` (NULL never is).

    Written as one IN list of ``'first|second'`` strings, which PostgreSQL hashes: a
    row-value IN list is expanded per element, with a copy of each operand every time.
    """
    joined = sa.type_coerce(first, sa.String) + PAIR_SEPARATOR + sa.type_coerce(second, sa.String)
    return joined.in_([f"{a}{PAIR_SEPARATOR}{b}" for a, b in pairs])


PAIR_SEPARATOR = "|"  # in no status name, built-in or extra (_LEGACY_VALUE)


def canonical_legacy_values(system: LegacySystemType) -> list[str]:
    """Every legacy value unistatus may write to ``system``'s table: the canonical
    reverse mapping of each unified status of its transaction type."""
    return sorted(set(_REVERSE_STR[system.transaction_type].values()))


def mapping_rows() -> list[dict[str, str]]:
    """Every forward mapping as rows (for the `mapping` command and docs).

    ``origin`` is ``built-in`` for the 38, ``extra`` for a registered extra value.
    """
    return [
        {
            "system": s.value,
            "legacy": legacy,
            "unified": unified,
            "origin": "built-in" if legacy in _BUILTIN_FORWARD_STR[s] else "extra",
        }
        for s, m in _FORWARD_STR.items()
        for legacy, unified in m.items()
    ]
