"""Where a check run is, per legacy system: committed range by range, so it can resume.

One row of ``unistatus_check_runs`` per run and system holds the last legacy key checked
(the next range starts above it) and the counts so far. Both are written in ONE
transaction after each range, so a run killed at any moment has either counted a range
and moved past it, or neither: ``check --resume`` skips no range and counts none twice.
Continuous verification keeps its watermark in rows of the run :data:`CONTINUOUS`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.db.server_clock import database_now
from unistatus.db.tables_check import check_runs as R
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.check_rule import KINDS

__all__ = [
    "CONTINUOUS",
    "COUNT_KEYS",
    "RunState",
    "SystemPosition",
    "add_counts",
    "latest_unfinished",
    "new_run_id",
]

CONTINUOUS = "continuous"  # the run name of continuous verification's rows
COUNT_KEYS = ("total", "ok", *KINDS)


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


def add_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {k: int(a.get(k, 0)) + int(b.get(k, 0)) for k in COUNT_KEYS}


def new_run_id() -> str:
    return f"c-{uuid.uuid4().hex[:16]}"


@dataclass
class SystemPosition:
    """One system of one run: how far it got and what it counted so far."""

    system: LegacySystemType
    position: int | None = None
    done: bool = False
    ranges: int = 0
    counts: dict[str, int] = field(default_factory=zero_counts)
    examples: list[dict[str, Any]] = field(default_factory=list)
    out_bytes: int | None = None
    watermark: datetime | None = None
    pass_started_at: datetime | None = None
    started_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass
class RunState:
    """A run: its options and each system's position. ``persist=False``: memory only."""

    run: str
    options: dict[str, Any]
    systems: dict[LegacySystemType, SystemPosition]
    persist: bool = True
    # Its report stored (``finished_at`` set): nothing left to resume.
    finished: bool = False

    @property
    def started_at(self) -> datetime:
        return min((p.started_at for p in self.systems.values()), default=utcnow())

    @property
    def complete(self) -> bool:
        """Every range of every system counted (its report may not be stored yet:
        ``finished`` says)."""
        return all(p.done for p in self.systems.values())

    @property
    def out_bytes(self) -> int:
        """How much of the --out file the committed ranges wrote (systems run in order)."""
        return max((p.out_bytes or 0 for p in self.systems.values()), default=0)

    # --- storage --------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        engine: sa.Engine,
        options: dict[str, Any],
        systems: Iterable[LegacySystemType],
        *,
        persist: bool = True,
        run: str | None = None,
    ) -> RunState:
        state = cls(run or new_run_id(), options, {s: SystemPosition(s) for s in systems}, persist)
        if persist:
            with engine.begin() as conn:
                now = database_now(conn)  # what gates compare with the control log's
                conn.execute(
                    sa.insert(R),
                    [
                        {
                            "run": state.run,
                            "system": s.value,
                            "options": options,
                            "position": None,
                            "done": False,
                            "ranges": 0,
                            "counts": zero_counts(),
                            "examples": [],
                            "started_at": now,
                            "updated_at": now,
                        }
                        for s in state.systems
                    ],
                )
            for p in state.systems.values():
                p.started_at = p.updated_at = now
        return state

    @classmethod
    def load(cls, conn: sa.Connection, run: str) -> RunState | None:
        rows = conn.execute(sa.select(R).where(R.c.run == run).order_by(R.c.id)).mappings().all()
        if not rows:
            return None
        systems = {}
        for row in rows:
            system = LegacySystemType.parse(row["system"])
            systems[system] = SystemPosition(
                system,
                position=row["position"],
                done=bool(row["done"]),
                ranges=int(row["ranges"]),
                counts={**zero_counts(), **dict(row["counts"] or {})},
                examples=list(row["examples"] or []),
                out_bytes=row["out_bytes"],
                watermark=as_utc(row["watermark"]),
                pass_started_at=as_utc(row["pass_started_at"]),
                started_at=as_utc(row["started_at"]) or utcnow(),
                updated_at=as_utc(row["updated_at"]) or utcnow(),
            )
        finished = any(row["finished_at"] is not None for row in rows)
        return cls(run, dict(rows[0]["options"] or {}), systems, finished=finished)

    def commit(self, conn: sa.Connection, system: LegacySystemType) -> None:
        """Store one system's position and counts (in the caller's transaction)."""
        p = self.systems[system]
        if not self.persist:
            p.updated_at = utcnow()
            return
        p.updated_at = database_now(conn)
        conn.execute(
            sa.update(R)
            .where(R.c.run == self.run, R.c.system == system.value)
            .values(
                position=p.position,
                done=p.done,
                ranges=p.ranges,
                counts=p.counts,
                examples=p.examples,
                out_bytes=p.out_bytes,
                watermark=p.watermark,
                pass_started_at=p.pass_started_at,
                updated_at=p.updated_at,
            )
        )

    def finish(self, conn: sa.Connection) -> None:
        """Mark the run finished (in the caller's transaction: the one storing its report,
        so a run is finished exactly when its report is stored)."""
        self.finished = True
        if not self.persist:
            return
        conn.execute(sa.update(R).where(R.c.run == self.run).values(finished_at=utcnow()))


def latest_unfinished(conn: sa.Connection) -> str | None:
    """The most recently started check run that has not finished (None if none)."""
    q = (
        sa.select(R.c.run)
        .where(R.c.finished_at.is_(None), R.c.run != CONTINUOUS)
        .order_by(R.c.started_at.desc(), R.c.id.desc())
        .limit(1)
    )
    found: str | None = conn.execute(q).scalar_one_or_none()
    return found
