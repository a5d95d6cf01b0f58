"""The dual-write adapter: the one way an application writes a status during the migration.

``core`` is the facade (:class:`DualWriteAdapter`); ``plan`` decides, ``rows`` reads and
locks, ``writes`` writes under the locks (and builds every unified and history row),
``create`` creates, ``fast`` is the one- or two-round-trip path, ``runner`` runs the
attempts, ``caller`` runs them in the caller's transaction (``connection=``), ``reads``
reads a status and judges one transaction, ``admission`` queues writes fairly, ``sql``
holds the prepared statements, ``keys`` the idempotency keys, ``stats`` the operation
statistics every adapter records and ``model`` the values they all share.

The facade's names load on first use (PEP 562 ``__getattr__``): the backfill builds its
rows with ``adapter.writes`` and must not pay for the whole adapter (``core`` and the
modules behind it) at every ``unistatus backfill`` start.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from unistatus.adapter.core import DualWriteAdapter, DualWriteResult, Fallback, OperationEvent

__all__ = ["DualWriteAdapter", "DualWriteResult", "Fallback", "OperationEvent"]


def __getattr__(name: str) -> object:
    """Load a name of ``unistatus.adapter.core`` on first access, then keep it here."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module("unistatus.adapter.core"), name)
    globals()[name] = value
    return value
