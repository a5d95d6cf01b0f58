"""Idempotency keys of ``DualWriteAdapter.create_transaction``.

Validating a key, the digest of the create's arguments, storing the key in the create's
transaction and replaying the first call's result on a repeat. Why a repeated or
retried create is safe: docs/adapter.md, "Idempotency keys of creates".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from unistatus.adapter.model import DualWriteResult
from unistatus.clock import utcnow
from unistatus.db.tables_idempotency import idempotency_keys
from unistatus.domain.inputs import check_key
from unistatus.domain.statuses import DualWriteMode, LegacySystemType, UnifiedTransactionStatus
from unistatus.errors import InputError

__all__ = ["IdempotencyClaim", "KeyTaken", "check_key"]

K = idempotency_keys


class KeyTaken(Exception):
    """The create's key was already stored (by an earlier or a concurrent call): nothing
    was written; the next attempt returns the stored result."""


@dataclass
class IdempotencyClaim:
    """One keyed create: its key, the digest of its arguments, and whether the next
    attempt must look the key up before writing (after a repeat or a lost COMMIT)."""

    key: str
    request_hash: str
    look_first: bool = False

    @classmethod
    def of(cls, key: object, arguments: dict[str, Any]) -> IdempotencyClaim:
        return cls(check_key(key), request_hash(arguments))

    def settle(self) -> bool:
        """A COMMIT was lost: the retry can tell whether it committed (by the key)."""
        self.look_first = True
        return True

    def taken(self, exc: sa.exc.IntegrityError) -> bool:
        """Whether ``exc`` is this key's primary key refusing a second row."""
        return K.name in str(exc.orig)

    def replay(self, conn: sa.Connection) -> DualWriteResult | None:
        """The first call's result if the key is stored (None: it is not)."""
        row = conn.execute(sa.select(K).where(K.c.key == self.key)).mappings().first()
        if row is None:
            return None
        if row["request_hash"] != self.request_hash:
            raise InputError(
                f"idempotency key {self.key!r} was used for a create with other arguments "
                f"(transaction {row['transaction_id']}); use a new key for a new transaction"
            )
        return DualWriteResult(
            operation_id=row["operation_id"],
            entity_id=row["transaction_id"],
            legacy_entity_id=row["legacy_id"],
            legacy_system=LegacySystemType(row["legacy_system"]) if row["legacy_system"] else None,
            mode=DualWriteMode(row["mode"]),
            primary_success=True,
            secondary_success=True,
            overall_success=True,
            status=UnifiedTransactionStatus(row["status"]) if row["status"] else None,
            legacy_status=row["legacy_status"],
            changed=False,
            replayed=True,
        )

    def params(self) -> dict[str, Any]:
        """The key's bind parameters in the create's one statement (PostgreSQL)."""
        return {"k_key": self.key, "k_request_hash": self.request_hash}

    def store(self, conn: sa.Connection, result: DualWriteResult) -> None:
        """Store the key with ``result``, in the create's transaction."""
        conn.execute(
            sa.insert(K).values(
                key=self.key,
                request_hash=self.request_hash,
                operation_id=result.operation_id,
                transaction_id=result.entity_id,
                legacy_system=result.legacy_system.value if result.legacy_system else None,
                legacy_id=result.legacy_entity_id,
                mode=result.mode.value,
                status=result.status.value if result.status else None,
                legacy_status=result.legacy_status,
                created_at=utcnow(),
            )
        )


def request_hash(arguments: dict[str, Any]) -> str:
    """SHA-256 of the arguments, canonical: equal values give equal digests."""

    def plain(value: Any) -> Any:
        # Recursive: equal Decimals inside legacy_values (1.5, 1.50) digest alike too.
        if isinstance(value, Decimal):
            return format(value.normalize(), "f")
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return getattr(value, "value", value)  # enums

    canonical = json.dumps(
        {k: plain(v) for k, v in arguments.items()},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
