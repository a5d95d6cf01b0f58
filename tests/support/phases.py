"""Put a test database in a phase, as ``phase advance --force`` would."""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.phases import PHASES, write_phase


def to_phase(engine: sa.Engine, phase: int, system: LegacySystemType | None = None) -> None:
    """Put ``system`` (None: every system) in ``phase`` (and its mode) as ``phase
    advance --force`` would."""
    with engine.begin() as conn:
        write_phase(
            conn,
            phase,
            PHASES[phase].mode,
            system=system,
            actor="test",
            reason=f"test: phase {phase}",
            metadata={},
        )
