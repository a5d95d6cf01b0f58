"""The errors survive a trip through pickle and copy: task runners (multiprocessing,
Celery, RQ) pickle the exception a task raised to hand it to the caller, and a class
rebuilt as ``cls(*args)`` from its message alone failed there (a probe: a
``multiprocessing.Pool`` waited for ever, a ``ProcessPoolExecutor`` broke, and
``EntityNotFoundError`` came back as "no transaction no transaction cashout:9")."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from unistatus import errors
from unistatus.adapter.model import DualWriteResult
from unistatus.domain.statuses import DualWriteMode

HOLDER = {"pid": 7, "application_name": "app", "state": "idle in transaction", "open_seconds": 3}

# One instance of every error class, built as the code raises it.
SAMPLES: list[errors.UnistatusError] = [
    errors.UnistatusError("root"),
    errors.ConfigError("bad setting"),
    errors.LegacyStatusRetiredError("check_consistency"),
    errors.SessionSettingsError("DateStyle", "timestamps not in ISO"),
    errors.SchemaOutdatedError("the adapter", "0020", "0030"),
    errors.SchemaTooNewError("0099", "0030"),
    errors.InputError("bad input"),
    errors.UnmappableStatusError("cashout", "WEIRD"),
    errors.UnmappableStoredStatusError("cashout", "WEIRD", "cashout:1", "PENDING"),
    errors.UncopyableLegacyRowError("cashout:1", "a NULL currency"),
    errors.InvalidStatusError(
        "WALLET_CASHOUT", "NOPE", ["PENDING", "SUCCESS"], ["PENDING_APPROVAL"], "cashout"
    ),
    errors.InvalidTransitionError("WALLET_CASHOUT", "SUCCESS", "PENDING", []),
    errors.WriteRefusedError("a CHECK constraint refused it"),
    errors.UnstorableLegacyStatusError("cashouts", "status", "PENDING_X", "holds 8 characters"),
    errors.InvalidIdentifierError("not an id"),
    errors.RepairRunningError("another repair of CASHOUT is running"),
    errors.EntityNotFoundError("cashout:99999999"),
    errors.ModeError("not in this mode"),
    errors.ModeLockBusyError("mode lock", 30.0, [HOLDER], outcome="the mode stays"),
    errors.GateError("a gate failed"),
    errors.PhaseMovedError("advance", 2, 3, "every system"),
    errors.StorageError("the database went away"),
    errors.ConnectionLimitError("too many connections", pool=20),
    errors.TableLockBusyError(
        "retire", 10.0, [{**HOLDER, "locks": ["AccessShareLock"]}], "unistatus retire"
    ),
    errors.CallerTransactionError(
        "the database failed",
        DualWriteResult(
            operation_id="op-1",
            entity_id="cashout:1",
            legacy_entity_id=1,
            mode=DualWriteMode.LEGACY_ONLY,
            primary_success=False,
            secondary_success=False,
            overall_success=False,
            error="server closed the connection",
        ),
    ),
    errors.CallerWriteRefusedError("refused in the caller's transaction"),
    errors.CallerKeyTakenError("the key was taken"),
    errors.ModeNotRestoredError(
        "could not put the mode back",
        left={"cashout": "UNIFIED_ONLY"},
        previous="LEGACY_ONLY",
        command="unistatus mode set LEGACY_ONLY",
        restore_error=errors.StorageError("gone"),
    ),
]


def _every_error_class() -> set[type[errors.UnistatusError]]:
    found, todo = set(), [errors.UnistatusError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return {c for c in found if c.__module__.startswith("unistatus")}


def _same(a: BaseException, b: BaseException) -> None:
    assert type(b) is type(a)
    assert str(b) == str(a)
    assert b.args == a.args
    assert vars(b).keys() == vars(a).keys()
    for name, value in vars(a).items():
        if isinstance(value, BaseException):
            _same(value, getattr(b, name))
        else:
            assert getattr(b, name) == value, name


def test_the_samples_cover_every_error_class() -> None:
    assert {type(e) for e in SAMPLES} == _every_error_class()


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_an_error_survives_pickle_with_its_message_and_attributes(
    error: errors.UnistatusError,
) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        _same(error, pickle.loads(pickle.dumps(error, protocol)))


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_an_error_survives_copy(error: errors.UnistatusError) -> None:
    _same(error, copy.copy(error))
    _same(error, copy.deepcopy(error))


def _refused_in_a_worker(error: Any) -> None:
    raise error


def test_an_error_raised_in_a_process_pool_reaches_the_caller() -> None:
    """What a task runner does: the worker raises, the caller gets the same error (before
    the fix, the pool broke: "A process in the process pool was terminated abruptly")."""
    raised = errors.InvalidTransitionError("WALLET_CASHOUT", "SUCCESS", "PENDING", [])
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(_refused_in_a_worker, raised)
        with pytest.raises(errors.InvalidTransitionError) as got:
            future.result(timeout=60)
    _same(raised, got.value)
    assert got.value.from_status == "SUCCESS" and got.value.allowed == []
