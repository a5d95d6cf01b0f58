"""Transaction identifiers: UTX ids and legacy references, parsed and derived.

A unified row made from a legacy row has a UTX id derived from it, in Python and in
SQL alike: "UTX" + system digit + the legacy id padded to 14 digits. A transaction born
unified gets "UTX9" + 14 random digits. No other UTX id can exist, so any other (digit 0, 4 to 8,
or a legacy id 0) is malformed, refused as such before any lookup. A legacy id beyond 14
digits cannot be migrated (:func:`require_migratable_id`).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import ConfigError, InvalidIdentifierError

# ASCII digits, matched whole (``fullmatch``): ``\d`` and ``$`` would also take
# Arabic-Indic or full-width digits and a trailing newline.
UTX_PATTERN = re.compile(r"UTX([0-9]{15})")
_SYSTEM_NAME = re.compile(r"[A-Za-z]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,20}")
SYSTEM_DIGIT = {
    LegacySystemType.CASHOUT: 1,
    LegacySystemType.ESCROW: 2,
    LegacySystemType.EXCHANGE: 3,
}
DIGIT_SYSTEM = {v: k for k, v in SYSTEM_DIGIT.items()}
BORN_UNIFIED_DIGIT = 9
MAX_LEGACY_ID = 10**14 - 1


def max_legacy_id_sql() -> sa.BindParameter[int]:
    """:data:`MAX_LEGACY_ID` in SQL, bound as a BIGINT: a legacy id column may be a
    4-byte INTEGER (Django, older Rails), to whose type the bound does not cast."""
    return sa.literal(MAX_LEGACY_ID, sa.BigInteger)


def outside_utx_range_sql(legacy_id: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """SQL: ``legacy_id`` is no id a UTX id can carry (1..:data:`MAX_LEGACY_ID`): beyond
    it (its derived id would be the next system's) or 0 and below (a malformed one, such
    as ``UTX99999999999995`` for -5: a table may hold them, SQLite or an explicit id)."""
    return sa.or_(legacy_id > max_legacy_id_sql(), legacy_id < sa.literal(1, sa.BigInteger))


def within_utx_range(legacy_id: int) -> bool:
    """Whether ``legacy_id`` is an id a UTX id can carry (1..:data:`MAX_LEGACY_ID`)."""
    return 0 < legacy_id <= MAX_LEGACY_ID


@dataclass(frozen=True)
class LegacyRef:
    """A row of a legacy system: ``LegacyRef(LegacySystemType.CASHOUT, 123)``."""

    system: LegacySystemType
    legacy_id: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "system", LegacySystemType.parse(self.system))
        if isinstance(self.legacy_id, bool) or not isinstance(self.legacy_id, int):
            raise InvalidIdentifierError(f"legacy id must be an integer, got {self.legacy_id!r}")
        if not 0 < self.legacy_id <= MAX_LEGACY_ID:
            raise InvalidIdentifierError(
                f"legacy id {self.legacy_id} out of range (1..{MAX_LEGACY_ID})"
            )

    @property
    def utx_id(self) -> str:
        return derive_utx_id(self.system, self.legacy_id)

    def __str__(self) -> str:
        return f"{self.system.value.lower()}:{self.legacy_id}"


@dataclass(frozen=True)
class UtxId:
    """A UTX id unistatus can make: derived from a legacy row, or born unified."""

    value: str

    def __post_init__(self) -> None:
        # Refused here, not looked up: no such row can exist, so "not found" would
        # send the caller looking for a transaction instead of at the id.
        if not isinstance(self.value, str) or not UTX_PATTERN.fullmatch(self.value):
            raise InvalidIdentifierError(
                f"malformed id {self.value!r}: expected UTX followed by 15 digits"
            )
        digit = int(self.value[3])
        if digit != BORN_UNIFIED_DIGIT and digit not in DIGIT_SYSTEM:
            raise InvalidIdentifierError(
                f"malformed id {self.value!r}: its digit {digit} after UTX names no system "
                "(1 cashout, 2 escrow, 3 exchange, 9 born unified)"
            )
        if digit in DIGIT_SYSTEM and int(self.value[4:]) == 0:
            raise InvalidIdentifierError(
                f"malformed id {self.value!r}: a legacy id is 1..{MAX_LEGACY_ID}, not 0"
            )

    @property
    def derived_ref(self) -> LegacyRef | None:
        """The legacy row this id was derived from, if it was derived from one."""
        system = DIGIT_SYSTEM.get(int(self.value[3]))
        return LegacyRef(system, int(self.value[4:])) if system else None

    def __str__(self) -> str:
        return self.value


EntityRef = LegacyRef | UtxId


def require_migratable_id(table: str, legacy_id: int) -> None:
    """ConfigError when ``legacy_id`` (of the legacy table ``table``) is beyond what a
    UTX id holds: its derived id would be malformed, or in SQL land on the next system's
    ids (cashout 10^14 + 5 would be escrow 5's ``UTX200000000000005``)."""
    if legacy_id > MAX_LEGACY_ID:
        raise ConfigError(
            f"{table} holds id {legacy_id}, beyond {MAX_LEGACY_ID}: a UTX id carries 14 "
            "digits of a legacy id, so rows with larger ids cannot be migrated; nothing "
            "was written"
        )


def derive_utx_id(system: LegacySystemType, legacy_id: int) -> str:
    return f"UTX{SYSTEM_DIGIT[system]}{legacy_id:014d}"


def new_unified_id() -> str:
    return f"UTX{BORN_UNIFIED_DIGIT}{secrets.randbelow(10**14):014d}"


def utx_id_sql(system: LegacySystemType, legacy_id: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """The same derivation as SQL: 'UTX' || CAST(digit * 10^14 + id AS text), any dialect."""
    number = sa.literal(SYSTEM_DIGIT[system] * 10**14, sa.BigInteger) + legacy_id
    return sa.literal("UTX", sa.String) + sa.cast(number, sa.String)


def parse_entity_id(entity_id: object) -> EntityRef:
    """``UTX...``, ``cashout:123``, a LegacyRef, or (system, id); InvalidIdentifierError else."""
    if isinstance(entity_id, LegacyRef | UtxId):
        return entity_id
    if isinstance(entity_id, tuple) and len(entity_id) == 2:
        return LegacyRef(LegacySystemType.parse(entity_id[0]), _int_id(entity_id[1], entity_id))
    if not isinstance(entity_id, str):
        raise InvalidIdentifierError(
            f"entity id must be a UTX id or 'system:id', got {type(entity_id).__name__}"
        )
    # Taken exactly as given: an id with stray whitespace (a trailing newline from a
    # header or a file) is malformed, not quietly another spelling of a real id.
    text = entity_id
    if UTX_PATTERN.fullmatch(text):
        return UtxId(text)
    if ":" in text:
        system, _, raw = text.partition(":")
        try:
            if not _SYSTEM_NAME.fullmatch(system):
                raise InvalidIdentifierError(system)
            sys_type = LegacySystemType.parse(system)
        except Exception:
            raise InvalidIdentifierError(
                f"malformed id {entity_id!r}: unknown system {system!r} (cashout, escrow, exchange)"
            ) from None
        return LegacyRef(sys_type, _int_id(raw, entity_id))
    raise InvalidIdentifierError(
        f"malformed id {entity_id!r}: expected UTX followed by 15 digits, or system:id "
        "(e.g. cashout:123)"
    )


def _int_id(raw: object, whole: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and _DIGITS.fullmatch(raw):
        return int(raw)
    raise InvalidIdentifierError(
        f"malformed id {whole!r}: the legacy id must be a positive integer in ASCII digits"
    )
