"""unistatus: migrate 38 legacy payment statuses to a 16-status unified model, live.

Start with :class:`DualWriteAdapter` (writes) and :class:`LegacyStatusMapper` (the
mapping); ``unistatus --help`` lists the operator commands.

The public names load on first use (PEP 562 ``__getattr__`` over ``_LAZY``), so importing
a subpackage such as ``unistatus.cli`` does not pay for SQLAlchemy and the adapter.
``from unistatus import X``, ``unistatus.X`` and ``import *`` work as with plain imports;
``dir(unistatus)`` lists every public name whether loaded yet or not (subpackages aside).
"""

import importlib as _importlib
import typing as _typing
from types import ModuleType as _ModuleType

from unistatus.version import VERSION as _VERSION

if _typing.TYPE_CHECKING:
    from unistatus.adapter.core import DualWriteAdapter, DualWriteResult, OperationEvent
    from unistatus.db.app_alembic import alembic_include_name
    from unistatus.db.infinite_times import read_infinite_times_as_missing
    from unistatus.domain.ids import LegacyRef
    from unistatus.domain.mapping import LegacyStatusMapper, register_extra_statuses
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
        CallerKeyTakenError,
        CallerTransactionError,
        CallerWriteRefusedError,
        ConfigError,
        ConnectionLimitError,
        EntityNotFoundError,
        GateError,
        InputError,
        InvalidIdentifierError,
        InvalidStatusError,
        InvalidTransitionError,
        LegacyStatusRetiredError,
        ModeError,
        ModeLockBusyError,
        ModeNotRestoredError,
        PhaseMovedError,
        RepairRunningError,
        SchemaOutdatedError,
        SchemaTooNewError,
        SessionSettingsError,
        StorageError,
        TableLockBusyError,
        UncopyableLegacyRowError,
        UnistatusError,
        UnmappableStatusError,
        UnmappableStoredStatusError,
        UnstorableLegacyStatusError,
        WriteRefusedError,
    )
    from unistatus.observe.stats import OperationStats

__version__ = _VERSION

__all__ = [
    "CallerKeyTakenError",
    "CallerTransactionError",
    "CallerWriteRefusedError",
    "CashoutStatus",
    "ConfigError",
    "ConnectionLimitError",
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
    "LegacyStatusRetiredError",
    "LegacySystemType",
    "ModeError",
    "ModeLockBusyError",
    "ModeNotRestoredError",
    "OperationEvent",
    "OperationStats",
    "PhaseMovedError",
    "RepairRunningError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "SessionSettingsError",
    "StorageError",
    "TableLockBusyError",
    "TransitionRules",
    "UncopyableLegacyRowError",
    "UnifiedTransactionStatus",
    "UnifiedTransactionType",
    "UnistatusError",
    "UnmappableStatusError",
    "UnmappableStoredStatusError",
    "UnstorableLegacyStatusError",
    "WriteRefusedError",
    "__version__",
    "alembic_include_name",
    "read_infinite_times_as_missing",
    "register_extra_statuses",
]

# Each public name and the module that defines it (keep in step with the imports above).
_LAZY = {
    "CallerKeyTakenError": "unistatus.errors",
    "CallerTransactionError": "unistatus.errors",
    "CallerWriteRefusedError": "unistatus.errors",
    "CashoutStatus": "unistatus.domain.statuses",
    "ConfigError": "unistatus.errors",
    "ConnectionLimitError": "unistatus.errors",
    "DualWriteAdapter": "unistatus.adapter.core",
    "DualWriteMode": "unistatus.domain.statuses",
    "DualWriteResult": "unistatus.adapter.core",
    "EntityNotFoundError": "unistatus.errors",
    "EscrowStatus": "unistatus.domain.statuses",
    "ExchangeStatus": "unistatus.domain.statuses",
    "GateError": "unistatus.errors",
    "InputError": "unistatus.errors",
    "InvalidIdentifierError": "unistatus.errors",
    "InvalidStatusError": "unistatus.errors",
    "InvalidTransitionError": "unistatus.errors",
    "LegacyRef": "unistatus.domain.ids",
    "LegacyStatusMapper": "unistatus.domain.mapping",
    "LegacyStatusRetiredError": "unistatus.errors",
    "LegacySystemType": "unistatus.domain.statuses",
    "ModeError": "unistatus.errors",
    "ModeLockBusyError": "unistatus.errors",
    "ModeNotRestoredError": "unistatus.errors",
    "OperationEvent": "unistatus.adapter.core",
    "OperationStats": "unistatus.observe.stats",
    "PhaseMovedError": "unistatus.errors",
    "RepairRunningError": "unistatus.errors",
    "SchemaOutdatedError": "unistatus.errors",
    "SchemaTooNewError": "unistatus.errors",
    "SessionSettingsError": "unistatus.errors",
    "StorageError": "unistatus.errors",
    "TableLockBusyError": "unistatus.errors",
    "TransitionRules": "unistatus.domain.transitions",
    "UncopyableLegacyRowError": "unistatus.errors",
    "UnifiedTransactionStatus": "unistatus.domain.statuses",
    "UnifiedTransactionType": "unistatus.domain.statuses",
    "UnistatusError": "unistatus.errors",
    "UnmappableStatusError": "unistatus.errors",
    "UnmappableStoredStatusError": "unistatus.errors",
    "UnstorableLegacyStatusError": "unistatus.errors",
    "WriteRefusedError": "unistatus.errors",
    "alembic_include_name": "unistatus.db.app_alembic",
    "read_infinite_times_as_missing": "unistatus.db.infinite_times",
    "register_extra_statuses": "unistatus.domain.mapping",
}


def __getattr__(name: str) -> object:
    """Load a public name from its module on first access, then keep it here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names as if every public name were imported; subpackages are not listed."""
    names = set(_LAZY)
    for name, value in globals().items():
        if isinstance(value, _ModuleType) and value.__name__.startswith(f"{__name__}."):
            continue  # a subpackage that happens to be imported, not part of the API
        names.add(name)
    return sorted(names)
