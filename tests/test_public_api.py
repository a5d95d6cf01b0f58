"""The public API: what the issue promises is importable from ``unistatus``, and
``__all__`` stays sorted and complete (a new public error cannot be forgotten)."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
from pathlib import Path

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
    "UnmappableStoredStatusError",
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


def _type_checking_imports(tree: ast.Module) -> dict[str, str]:
    """name -> module of the ``from M import name`` lines under ``if TYPE_CHECKING:``."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module, ast.unparse(stmt)
                for alias in stmt.names:
                    assert alias.asname is None, ast.unparse(stmt)
                    found[alias.name] = stmt.module
    return found


def _lazy_table(tree: ast.Module) -> dict[str, str]:
    """The literal ``_LAZY = {...}`` of the module, as written."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["_LAZY"]:
            table = ast.literal_eval(node.value)
            assert isinstance(table, dict)
            return table
    raise AssertionError("unistatus/__init__.py has no _LAZY = {...}")


def test_lazy_table_and_type_checking_imports_agree() -> None:
    """The two lists kept by hand in unistatus/__init__.py (the imports type checkers
    read, the table ``__getattr__`` loads from) name the same names from the same
    modules, and exactly the public names."""
    assert unistatus.__file__ is not None
    tree = ast.parse(Path(unistatus.__file__).read_text(encoding="utf-8"))
    typed, lazy = _type_checking_imports(tree), _lazy_table(tree)
    assert typed == lazy
    assert sorted(lazy) == [n for n in unistatus.__all__ if n != "__version__"]


def test_version_is_the_distributions() -> None:
    """``unistatus.__version__`` (unistatus/version.py) is pyproject.toml's version, as
    the installed distribution reports it."""
    assert unistatus.__version__ == importlib.metadata.version("unistatus")


def test_the_infinite_times_loader_is_exported_as_a_connect_listener() -> None:
    """docs/adapter.md's recipe for an application's own engine:
    ``event.listen(engine, "connect", unistatus.read_infinite_times_as_missing)``; the
    ``connect`` event passes (dbapi_connection, connection_record)."""
    from unistatus import read_infinite_times_as_missing

    assert "read_infinite_times_as_missing" in unistatus.__all__
    assert read_infinite_times_as_missing.__doc__
    params = list(inspect.signature(read_infinite_times_as_missing).parameters)
    assert params == ["dbapi_conn", "connection_record"]
    read_infinite_times_as_missing(object(), None)  # not psycopg: nothing changes


def test_connection_is_typed_to_take_a_scoped_session() -> None:
    """docs/adapter.md says a ``scoped_session`` (Flask-SQLAlchemy's ``db.session``) is
    taken, and it is, but ``mypy --strict`` refused it in the application (a probe)."""
    import typing

    from sqlalchemy.orm import Session, scoped_session

    from unistatus import DualWriteAdapter

    for method in ("create_transaction", "update_status", "get_transaction_status"):
        hints = typing.get_type_hints(getattr(DualWriteAdapter, method))
        assert scoped_session[Session] in typing.get_args(hints["connection"]), method
    assert scoped_session[Session] in typing.get_args(
        typing.get_type_hints(DualWriteAdapter.check_consistency)["connection"]
    )


def test_importing_unistatus_leaves_the_applications_warnings_alone() -> None:
    """Importing it added a process-wide filter that hid pydantic's warning of the
    application's own model with a field named ``schema`` (a probe): only unistatus's
    own classes are spared it."""
    import subprocess
    import sys

    code = (
        "from unistatus import DualWriteAdapter\n"
        "import unistatus.config\n"
        "from pydantic import BaseModel\n"
        "class Settings(BaseModel):\n"
        "    schema: str = 'x'\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and 'Field name "schema" in "Settings"' in done.stderr, done.stderr
