"""The phase a step expects to leave (``--from-phase N``): a compare-and-set of the phase.

`phase advance` and `phase rollback` move one step from wherever the phase is, so a
step that automation retries, or runs twice at once, moves two phases (or an advance
racing an emergency rollback turns dual-write back on). Given the phase it expects,
a step is refused with :class:`~unistatus.errors.PhaseMovedError` unless the phase is
that one: looked at first (before any gate is measured or backfill paused), and again
in the transaction that writes the new phase, under the exclusive mode lock. Without
it a step behaves as before.
"""

from __future__ import annotations

from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, PhaseMovedError

__all__ = ["require_from"]


def require_from(
    what: str, expected: int | None, actual: int | None, system: LegacySystemType | None
) -> None:
    """Refuse ``what`` (PhaseMovedError) unless the phase is ``expected`` (None: any).
    ``actual`` None: the systems are in different phases."""
    if expected is None:
        return
    if not 0 <= expected <= 4:
        raise InputError(f"--from-phase {expected}: a phase is 0 to 4")
    if actual != expected:
        who = f"{system.value} is" if system is not None else "the systems are"
        raise PhaseMovedError(what, expected, actual, who)
