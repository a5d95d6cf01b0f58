"""One repair of a system at a time: the claim on each system a repair writes.

Two repairs at once (two operators, or an operator and the monitor's automated repair)
each judge an entity again under its locks, so the second found the first's work
"already consistent" and reported that it kept its side over values the other had just
overwritten (exit 0), or each repaired half of the entities, a mix of both strategies
(a probe: ``legacy_wins`` beside ``unified_wins``). A repair that writes holds a claim
on every system it covers (:func:`unistatus.db.claims.hold_claims`: PostgreSQL's
advisory locks on a connection of its own, a lock file beside a SQLite database; gone
with its process) and is refused at once, before it repairs anything, where another
holds one. Repairs of different systems run side by side; a dry run writes nothing and
claims nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from unistatus.config import NetworkSettings
from unistatus.db.claims import hold_claims
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import RepairRunningError

__all__ = ["claim_systems"]

_PREFIX = "unistatus.repair:"


def _busy(name: str) -> RepairRunningError:
    system = name.removeprefix(_PREFIX)
    return RepairRunningError(
        f"another repair of {system} is running right now (an operator's `unistatus "
        "repair`, or the monitor's): nothing was repaired; wait for it to end, then run "
        "this one again (or repair another system with --system)"
    )


@contextmanager
def claim_systems(
    engine: sa.Engine,
    systems: Iterable[LegacySystemType],
    network: NetworkSettings | None = None,
) -> Iterator[None]:
    """Hold ``systems`` while the block repairs them; RepairRunningError if another
    process repairs one of them."""
    names = [f"{_PREFIX}{s.value}" for s in sorted(set(systems), key=lambda s: s.value)]
    with hold_claims(engine, names, _busy, tag="repair", network=network):
        yield
