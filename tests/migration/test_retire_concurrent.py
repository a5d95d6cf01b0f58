"""Two retirements (or two undos) at once: one does it, the other says it was done.

A runbook's step retried, or run twice at once by automation: the second run must not
report a drop it did not make, nor fail on the columns the first one dropped under it.
The order is forced by running the competitor inside the first run, at the moment named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import test_retire

from conftest import Database
from support.race import at_once
from unistatus.db.control import history
from unistatus.migration import retire as retire_module
from unistatus.migration.retire import (
    legacy_columns_dropped,
    retire_legacy_columns,
    undo_cleanup,
)

retirable = test_retire.retirable  # the fixture: seeded, frozen, archived, put back after

KEYS = {"already_dropped", "checksum_before", "dropped", "revision", "tables", "detail"}


def _drops(db: Database) -> list[str]:
    return [c.new_value or "" for c in history(db.engine, key="legacy_columns")]


def _competitor_inside(
    monkeypatch: pytest.MonkeyPatch, name: str, competitor: Callable[[], Any], *, after: bool
) -> list[Any]:
    """Patch ``retire.<name>`` so that its first call runs ``competitor`` (before or after
    the real call), as another process would at that moment."""
    real = getattr(retire_module, name)
    ran: list[Any] = []

    def patched(*args: Any, **kwargs: Any) -> Any:
        if ran:
            return real(*args, **kwargs)
        ran.append(None)
        if not after:
            ran.append(competitor())
        result = real(*args, **kwargs)
        if after:
            ran.append(competitor())
        return result

    monkeypatch.setattr(retire_module, name, patched)
    return ran


def _retire(db: Database, reason: str) -> Callable[[], dict[str, Any]]:
    return lambda: retire_legacy_columns(db.engine, db.settings, actor="t", reason=reason)


def test_a_retirement_that_ran_before_the_gates_is_reported_not_refused(
    retirable: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other run drops the columns after this one saw them in place: its gates then
    found them missing (a GateError blaming the archive, or the database's own error)."""
    db = retirable
    ran = _competitor_inside(monkeypatch, "blockers", _retire(db, "r1"), after=False)
    result = _retire(db, "r2")()
    assert ran[1]["dropped"] is True
    assert result["already_dropped"] is True and result["dropped"] is False
    assert set(result) == set(ran[1]) == KEYS
    assert _drops(db) == ["dropped"]


def test_a_retirement_that_ran_after_the_gates_is_reported_not_claimed(
    retirable: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other run drops the columns after this one's gates passed: its migration then
    did nothing, and it said it had dropped them."""
    db = retirable
    ran = _competitor_inside(monkeypatch, "status_checksum", _retire(db, "r1"), after=True)
    result = _retire(db, "r2")()
    assert ran[1]["dropped"] is True
    assert result["already_dropped"] is True and result["dropped"] is False
    assert result["checksum_before"] is None
    assert _drops(db) == ["dropped"]
    assert legacy_columns_dropped(db.engine, db.settings)


def test_an_undo_that_ran_first_is_reported_not_claimed(
    retirable: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = retirable
    _retire(db, "r")()
    other = lambda: undo_cleanup(db.engine, db.settings, actor="t", reason="u1")  # noqa: E731
    ran = _competitor_inside(monkeypatch, "_check_change", other, after=False)
    result = undo_cleanup(db.engine, db.settings, actor="t", reason="u2")
    assert ran[1]["undone"] is True
    assert result["undone"] is False
    assert set(result) == set(ran[1])  # a repeat's answer has the keys of the undo's
    assert result["detail"] and "reason" not in result
    assert _drops(db) == ["restored", "dropped"]


def test_two_retirements_and_two_undos_at_once(retirable: Database) -> None:
    """Real threads: one of each pair does it, the other says so; no error."""
    db = retirable

    dropped: Any = at_once(
        lambda r: retire_legacy_columns(db.engine, db.settings, actor="t", reason=r), "a", "b"
    )
    assert sorted(d["dropped"] for d in dropped) == [False, True], dropped
    undone: Any = at_once(
        lambda r: undo_cleanup(db.engine, db.settings, actor="t", reason=r), "a", "b"
    )
    assert sorted(u["undone"] for u in undone) == [False, True], undone
    assert _drops(db) == ["restored", "dropped"]
