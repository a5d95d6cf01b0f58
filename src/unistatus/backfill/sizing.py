"""Batch sizes that follow a target batch duration instead of a fixed row count.

The idea is GitLab's batch optimizer for batched background migrations
(``Gitlab::Database::BackgroundMigration::BatchOptimizer``): compare how long batches
take with how long they should take ("time efficiency"), smooth that with an
exponential moving average (alpha 0.4) so one slow or fast batch does not swing the
size, and when it is outside a tolerance band scale the size by the ratio, assuming
time is linear in the size; never grow by more than 20% at once, and keep the size
between a minimum and a maximum.

What differs here, and why: GitLab re-sizes a migration every few jobs from the
efficiencies of its last N jobs; a backfill worker re-sizes after every batch, so the
quantity smoothed is the cost of one row (ms per row), which does not change when the
size does. The size aimed at is ``target / smoothed cost``: with a fixed per-batch
overhead the cost per row includes its share of it, and the only size where
``target / cost`` equals the size is the one whose batches take the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Smoothing factor of the moving average of the cost per row (GitLab's EMA_ALPHA).
ALPHA = 0.4
# The most a size grows from one batch to the next (GitLab's MAX_MULTIPLIER); shrinking
# is not capped: a batch that ran far too long is the thing to correct at once.
MAX_GROWTH = 1.2
# No change while a batch of the current size is expected to take within this share of
# the target (GitLab aims at 90-95% of its interval): no jitter around the target.
BAND = (0.9, 1.1)


@dataclass
class BatchSizer:
    """The size (rows) of the next batch of one legacy table, from the batches so far.

    ``target_ms`` 0 means fixed: every batch is ``start`` rows. Otherwise the size
    starts at ``start`` and stays within ``[min_rows, max_rows]``.
    """

    start: int
    target_ms: float
    min_rows: int
    max_rows: int
    rows: int = 0
    ms_per_row: float | None = None  # smoothed; None before the first batch
    last: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = self.start
        self.retarget(self.target_ms, self.min_rows, self.max_rows)

    @property
    def adaptive(self) -> bool:
        return self.target_ms > 0

    def retarget(self, target_ms: float, min_rows: int, max_rows: int) -> None:
        """New target or bounds (``backfill tune``): the size moves inside them at once."""
        self.target_ms = target_ms
        self.min_rows = max(1, min(min_rows, max_rows))
        self.max_rows = max(self.min_rows, max_rows)
        if not self.adaptive:
            self.rows = self.start
        else:
            self.rows = min(max(self.rows, self.min_rows), self.max_rows)

    def observe(self, rows: int, seconds: float) -> int:
        """A batch of ``rows`` took ``seconds``: the size of the next one."""
        self.last = {"rows": rows, "ms": round(max(seconds, 0.0) * 1000.0, 3)}
        if not self.adaptive or rows <= 0:
            return self.rows
        cost = max(seconds, 0.0) * 1000.0 / rows
        self.ms_per_row = (
            cost if self.ms_per_row is None else ALPHA * cost + (1 - ALPHA) * self.ms_per_row
        )
        expected = self.ms_per_row * self.rows / self.target_ms
        if BAND[0] <= expected <= BAND[1]:
            return self.rows
        wanted = self.target_ms / self.ms_per_row if self.ms_per_row > 0 else float("inf")
        wanted = min(wanted, self.rows * MAX_GROWTH)
        self.rows = int(min(max(round(wanted), self.min_rows), self.max_rows))
        return self.rows

    def learn_from(self, other: BatchSizer) -> None:
        """Start where ``other`` (the same worker's sizer of another legacy table) got to.

        Before its first batch a sizer knows nothing but ``start``; climbing from there at
        20% a batch takes a dozen small batches per table. The cost per row another table
        showed on the same database a moment ago is a better first guess; a batch that
        then runs long is corrected at once (shrinking is not capped).
        """
        if not self.adaptive or self.ms_per_row is not None or other.ms_per_row is None:
            return
        self.ms_per_row = other.ms_per_row
        self.rows = int(min(max(other.rows, self.min_rows), self.max_rows))

    def chunks(self, chunk_rows: int) -> int:
        """How many planned chunks of ``chunk_rows`` the next batch claims (at least 1)."""
        return max(1, round(self.rows / max(chunk_rows, 1)))
