"""unistatus: migrate 38 legacy payment statuses to a 16-status unified model, live.

Start with :class:`DualWriteAdapter` (writes) and :class:`LegacyStatusMapper` (the
mapping); ``unistatus --help`` lists the operator commands.
"""

from unistatus.adapter import DualWriteAdapter, DualWriteResult, OperationEvent
from unistatus.domain.ids import LegacyRef
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import (
    CashoutStatus,
    DualWriteMode,
    EscrowStatus,
    ExchangeStatus,
    LegacySystemType,
    UnifiedTransactionStatus,
    UnifiedTransactionType,
)
from unistatus.domain.transitions import TransitionRules
from unistatus.errors import (
    ConfigError,
    EntityNotFoundError,
    GateError,
    InputError,
    InvalidIdentifierError,
    InvalidStatusError,
    InvalidTransitionError,
    ModeError,
    StorageError,
    UnistatusError,
    UnmappableStatusError,
)
from unistatus.observe.stats import OperationStats

__version__ = "0.1.0"

__all__ = [
    "CashoutStatus",
    "ConfigError",
    "DualWriteAdapter",
    "DualWriteMode",
    "DualWriteResult",
    "EntityNotFoundError",
    "EscrowStatus",
    "ExchangeStatus",
    "GateError",
    "InputError",
    "InvalidIdentifierError",
    "InvalidStatusError",
    "InvalidTransitionError",
    "LegacyRef",
    "LegacyStatusMapper",
    "LegacySystemType",
    "ModeError",
    "OperationEvent",
    "OperationStats",
    "StorageError",
    "TransitionRules",
    "UnifiedTransactionStatus",
    "UnifiedTransactionType",
    "UnistatusError",
    "UnmappableStatusError",
    "__version__",
]
