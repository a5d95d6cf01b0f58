"""The control endpoints: write mode, phase advance and rollback, emergency rollback.

Every one needs an admin token (:mod:`unistatus.api.auth`) and a reason; the history
records the token's name with the caller's ``actor`` label.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI

from unistatus import errors
from unistatus.api.access import actor_for
from unistatus.api.auth import Admin
from unistatus.api.error_responses import error_answers
from unistatus.api.models import EmergencyRollback, ModeChange, PhaseAdvance, PhaseRollback
from unistatus.api.state import ServiceState
from unistatus.db.control import switch_as_dict
from unistatus.migration.mode_switch import switch_mode
from unistatus.migration.phases import advance
from unistatus.migration.rollback import emergency_rollback, rollback_current_phase

__all__ = ["add_control_routes"]


# Every control endpoint takes a JSON body and an admin token, and may be refused.
_ANSWERS = error_answers(400, 401, 403, 409, 413, 415, 422, 503)
# A refusal says what to do in the command's words; an HTTP client sends a body's fields.
# The phrases only: a command quoted whole (`retire legacy-columns --undo --reason ...`)
# is a command to run, kept as it is.
_AS_FIELDS = (
    ("pass --force with --reason", 'send "force": true with a "reason"'),
    ("--force over failing gates needs --reason", '"force" over failing gates needs a "reason"'),
)


@contextmanager
def _said_for_http() -> Iterator[None]:
    """A refusal that names the command's options names the body's fields instead."""
    try:
        yield
    except errors.UnistatusError as exc:
        said = str(exc)
        for words, fields in _AS_FIELDS:
            said = said.replace(words, fields)
        if said != str(exc):
            exc.args = (said,)
        raise


def add_control_routes(app: FastAPI, service: ServiceState) -> None:

    @app.put("/api/v1/control/mode", tags=["control"], responses=_ANSWERS)
    def set_mode(body: ModeChange, who: Admin) -> dict[str, Any]:
        """Switch the write mode of one legacy system (``system``) or of every system
        (no ``system``), for every adapter (waits for that system's in-flight writes).

        Entering a unified-read mode while unified may be stale, or any mode but
        LEGACY_ONLY while the capture is enabled and its triggers are stale, is refused
        (409) unless ``force``; prefer the gated ``/api/v1/control/phase/advance``.
        """
        with _said_for_http():
            changes = switch_mode(
                service.engine,
                body.mode,
                system=body.system,
                reason=body.reason,
                actor=actor_for(who, body.actor),
                force=body.force,
                settings=service.settings,
            )
        return switch_as_dict(body.mode, body.system, changes)

    @app.post("/api/v1/control/phase/advance", tags=["control"], responses=_ANSWERS)
    def phase_advance(body: PhaseAdvance, who: Admin) -> dict[str, Any]:
        """Enter the next phase when its gates pass (``force`` needs a reason); 409 if not.

        ``system``: that legacy system only, its gates measured on its own data; absent:
        every system, which must all be in one phase (409 naming them otherwise)."""
        with _said_for_http():
            change = advance(
                service.engine,
                service.settings,
                actor=actor_for(who, body.actor),
                reason=body.reason,
                force=body.force,
                system=body.system,
                from_phase=body.from_phase,
            )
        return change.as_dict()

    @app.post("/api/v1/control/phase/rollback", tags=["control"], responses=_ANSWERS)
    def phase_rollback(body: PhaseRollback, who: Admin) -> dict[str, Any]:
        """Go back one phase by its rollback procedure: of one ``system`` (its phase and
        mode only; from phase 4 only its pending changes are replayed), or of every
        system (absent; 409 naming each system's phase while they differ)."""
        with _said_for_http():
            change = rollback_current_phase(
                service.engine,
                service.settings,
                actor=actor_for(who, body.actor),
                reason=body.reason,
                system=body.system,
                from_phase=body.from_phase,
            )
        return change.as_dict()

    @app.post("/api/v1/control/rollback", tags=["control"], responses=_ANSWERS)
    def emergency(body: EmergencyRollback, who: Admin) -> dict[str, Any]:
        """Emergency rollback: replay where legacy is stale, then legacy only (of one
        ``system``, or of every system)."""
        return emergency_rollback(
            service.engine,
            service.settings,
            actor=actor_for(who, body.actor),
            reason=body.reason,
            system=body.system,
        )
