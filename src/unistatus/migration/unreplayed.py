"""Changes recorded for the replay to legacy: where legacy is read as they will leave it,
and where they are left behind.

In UNIFIED_ONLY legacy is frozen by design: each change is recorded for the replay
(``unistatus_pending_legacy``) and the unified row keeps its legacy image, so the check
and the adapter's judge read legacy as the replay will leave it (:func:`projected_systems`,
check_sql's ``projected_legacy_status``). Only there: modes are per system, and in any
other mode legacy is written (and read) again, so a change recorded while the system was
in UNIFIED_ONLY and never replayed (a restored copy whose control rows were lost, a mode
switched by hand) leaves legacy stale. Such a pair is judged as it is, and
:func:`unreplayed_outside_unified_only` counts those changes for `check` and `diagnose`,
which name the command that replays them (:func:`unreplayed_note`).
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.mode_reads import read_modes
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.domain.statuses import DualWriteMode, LegacySystemType

__all__ = [
    "REPLAY_COMMAND",
    "pending_replay_exists",
    "projected_systems",
    "unreplayed_note",
    "unreplayed_outside_unified_only",
]

P, U = pending_legacy_changes, unified_transactions
# What replays them: every rollback replays first (one system with --system).
REPLAY_COMMAND = 'unistatus rollback --emergency --reason "TEXT"'


def pending_replay_exists(conn: sa.Connection) -> bool:
    """Whether any change awaits replay to legacy (only then is the projection needed)."""
    q = sa.select(P.c.id).where(P.c.replayed_at.is_(None))
    return conn.execute(q.limit(1)).first() is not None


def projected_systems(conn: sa.Connection) -> frozenset[LegacySystemType]:
    """The systems whose pairs are judged with legacy as the replay will leave it: those
    in UNIFIED_ONLY, while some change awaits the replay (none: nothing to project)."""
    if not pending_replay_exists(conn):
        return frozenset()
    modes = read_modes(conn)
    return frozenset(s for s, mode in modes.items() if mode is DualWriteMode.UNIFIED_ONLY)


def unreplayed_outside_unified_only(conn: sa.Connection) -> dict[LegacySystemType, int]:
    """Per system not in UNIFIED_ONLY, how many changes recorded for the replay were
    never replayed (systems with none left out)."""
    modes = read_modes(conn)
    others = [s.value for s, mode in modes.items() if mode is not DualWriteMode.UNIFIED_ONLY]
    if not others or not pending_replay_exists(conn):
        return {}
    q = (
        sa.select(U.c.legacy_system, sa.func.count())
        .select_from(P.join(U, U.c.id == P.c.transaction_id))
        .where(P.c.replayed_at.is_(None), U.c.legacy_system.in_(others))
        .group_by(U.c.legacy_system)
    )
    return {LegacySystemType(str(s)): int(n) for s, n in conn.execute(q) if n}


def unreplayed_note(counts: dict[LegacySystemType, int]) -> str | None:
    """What `check` and `diagnose` say of :func:`unreplayed_outside_unified_only`."""
    total = sum(counts.values())
    if not total:
        return None
    each = ", ".join(f"{s.value}: {n}" for s, n in sorted(counts.items()))
    return (
        f"{total} change(s) recorded in UNIFIED_ONLY were never replayed to legacy ({each}), "
        "though the system is no longer in UNIFIED_ONLY: legacy is stale for them and the "
        f"check judges it as it is. Replay them: `{REPLAY_COMMAND}` (`--system` for one)"
    )
