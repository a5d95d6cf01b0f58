"""The public API: what the issue promises is importable from ``unistatus``, and
``__all__`` stays sorted and complete (a new public error cannot be forgotten)."""

from __future__ import annotations

import inspect

import unistatus
from unistatus import errors

PROMISED = [
    "CashoutStatus",
    "EscrowStatus",
    "ExchangeStatus",
    "UnifiedTransactionStatus",
    "UnifiedTransactionType",
    "LegacySystemType",
    "DualWriteMode",
    "LegacyStatusMapper",
    "TransitionRules",
    "DualWriteAdapter",
    "DualWriteResult",
    "LegacyRef",
    "UnistatusError",
    "UnmappableStatusError",
    "InvalidTransitionError",
    "OperationEvent",
    "OperationStats",
]


def test_promised_names_are_importable() -> None:
    namespace: dict[str, object] = {}
    exec(f"from unistatus import {', '.join(PROMISED)}", namespace)
    for name in PROMISED:
        assert namespace[name] is getattr(unistatus, name)
        assert name in unistatus.__all__


def test_all_is_sorted_and_resolves() -> None:
    assert unistatus.__all__ == sorted(unistatus.__all__)
    assert len(set(unistatus.__all__)) == len(unistatus.__all__)
    for name in unistatus.__all__:
        assert hasattr(unistatus, name), name


def test_all_is_exactly_the_public_names() -> None:
    """httpx's rule: every public name of the package is exported, and nothing else.

    A name imported into ``unistatus`` but not put in ``__all__`` fails here: make it
    private (``_name``) or export it. Submodules are not API names; ``__version__`` is
    the one dunder exported.
    """
    public = sorted(
        name
        for name in dir(unistatus)
        if not name.startswith("_") and not inspect.ismodule(getattr(unistatus, name))
    )
    assert [n for n in unistatus.__all__ if n != "__version__"] == public
    assert "__version__" in unistatus.__all__


def test_every_error_is_exported_and_rooted() -> None:
    defined = {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
    }
    assert "UnistatusError" in defined and len(defined) >= 10
    for name, cls in defined.items():
        assert issubclass(cls, errors.UnistatusError), name
        assert name in unistatus.__all__, f"{name} is not exported from unistatus"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from unistatus import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(unistatus.__all__)
