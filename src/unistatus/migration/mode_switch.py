"""A write mode switched by hand (``mode set``, ``PUT /api/v1/control/mode``): what
:func:`unistatus.db.control.set_mode` does, refused first where the capture's triggers
could not follow the mode entered.

The gated way (``phase advance``) measures the same thing as a gate
(:func:`unistatus.migration.gates.gate_capture_current`).
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.control import ControlChange, set_mode, switch_failed
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import ModeError
from unistatus.migration import capture

__all__ = ["FORCED_OVER_CAPTURE", "switch_mode"]

log = logging.getLogger(__name__)

# The control log's metadata key of a switch forced over stale capture triggers.
FORCED_OVER_CAPTURE = "forced_over_stale_capture"


def switch_mode(
    engine: sa.Engine,
    mode: DualWriteMode | str,
    *,
    system: LegacySystemType | str | None = None,
    reason: str,
    actor: str,
    force: bool = False,
    settings: Settings,
) -> list[ControlChange]:
    """Switch ``system``'s write mode (None: every system's), as
    :func:`unistatus.db.control.set_mode` does.

    A mode that writes unified (every mode but LEGACY_ONLY) is refused while the capture
    is enabled and its triggers are not what this release installs (an upgrade leaves
    them as they were): a write that bypasses unistatus could miss unified. ``force``
    switches anyway and records why in the control log. LEGACY_ONLY (a rollback) is
    never held up by the capture.
    """
    new = DualWriteMode.parse(mode)
    metadata: dict[str, Any] | None = None
    if new is not DualWriteMode.LEGACY_ONLY and _capture_enabled(engine):
        stale = capture.status(engine, settings).stale_reason
        if stale is not None and not force:
            raise ModeError(
                f"cannot switch to {new.value} (nothing changed): {stale}. Triggers of an "
                "earlier release may not follow this mode (before per-system modes they "
                "read the one global mode), so a write that bypasses unistatus could miss "
                "unified; pass --force with --reason to switch anyway"
            )
        if stale is not None:
            log.warning("mode %s forced by %s over stale capture: %s", new.value, actor, stale)
            metadata = {FORCED_OVER_CAPTURE: stale}
    return set_mode(
        engine,
        new,
        system=system,
        reason=reason,
        actor=actor,
        force=force,
        settings=settings,
        metadata=metadata,
    )


def _capture_enabled(engine: sa.Engine) -> bool:
    """Whether the capture is enabled (one read; its status generates its SQL)."""
    try:
        with engine.connect() as conn:
            return capture.enabled_since(conn) is not None
    except sa.exc.DBAPIError as exc:
        raise switch_failed(engine, exc) from None
