"""A write interrupted after it committed: while its own event is handed to the
observers (metrics, logging, exporters), or by an interruption landing between the
write slot being taken and the code that gives it back.

A write that committed is never reported "rolled back, nothing written", and is
observed exactly once; a write slot is never lost to an interruption.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Database
from support.adapters import adapter_in
from unistatus import DualWriteMode, OperationEvent
from unistatus.adapter.admission import FairGate

M = DualWriteMode


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt / SystemExit / CancelledError: not an Exception."""


def test_an_interruption_while_the_success_is_observed_is_not_a_second_event(
    db: Database,
) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    entity_id = str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)
    events: list[OperationEvent] = []
    raised = Interrupt("stop")

    def exporter(event: OperationEvent) -> None:
        if event.operation == "update_status" and event.success:
            raise raised  # e.g. Ctrl-C while a metrics exporter sends the event

    a.observers.append(events.append)
    a.observers.append(exporter)
    with pytest.raises(Interrupt) as caught:
        a.update_status(entity_id, "PROCESSING", "r", "svc")
    assert caught.value is raised
    changes = [(e.success, e.error) for e in events if e.operation == "update_status"]
    assert changes == [(True, None)]
    assert a.get_transaction_status(entity_id)[0].value == "PROCESSING"  # type: ignore[union-attr]
    a.close()


def test_an_interruption_while_a_create_is_observed_is_not_a_second_event(
    db: Database,
) -> None:
    """The locked path on both backends (a create): the same."""
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    events: list[OperationEvent] = []

    def exporter(event: OperationEvent) -> None:
        if event.success:
            raise SystemExit(3)

    a.observers.append(events.append)
    a.observers.append(exporter)
    with pytest.raises(SystemExit):
        a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", idempotency_key="k-1")
    assert [(e.operation, e.success, e.error) for e in events] == [
        ("create_transaction", True, None)
    ]
    a.observers.clear()
    again = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", idempotency_key="k-1")
    assert again.overall_success and again.entity_id is not None  # the one it committed
    a.close()


def test_an_interruption_just_after_a_write_slot_is_taken_does_not_lose_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interruption lands after the gate handed the slot over, before the write
    holds it in a ``try``: the slot is given back all the same."""
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    entity_id = str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)
    gate = a.gate
    assert isinstance(gate, FairGate)
    take = gate.acquire

    def taken_then_interrupted(*args: Any, **kwargs: Any) -> bool:
        assert take(*args, **kwargs)
        raise Interrupt("stop")

    monkeypatch.setattr(gate, "acquire", taken_then_interrupted)
    with pytest.raises(Interrupt):
        a.update_status(entity_id, "PROCESSING", "r", "svc")
    monkeypatch.undo()
    # Every slot is free again: as many writes at once as there are slots.
    for _ in range(gate.slots):
        assert gate.acquire(timeout=0)
    for _ in range(gate.slots):
        gate.release()
    assert a.update_status(entity_id, "PROCESSING", "r", "svc").overall_success
    a.close()
