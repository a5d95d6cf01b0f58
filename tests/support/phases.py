"""Put a test database in a phase, as ``phase advance --force`` would."""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.migration.phases import PHASES, write_phase


def to_phase(engine: sa.Engine, phase: int) -> None:
    """Put the migration in ``phase`` (and its mode) as ``phase advance --force`` would."""
    with engine.begin() as conn:
        write_phase(
            conn,
            phase,
            PHASES[phase].mode,
            actor="test",
            reason=f"test: phase {phase}",
            metadata={},
        )
