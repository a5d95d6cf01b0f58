"""Historical backfill of ``unified_transactions`` from the legacy tables.

Set-based and exactly once: each batch is one ``INSERT ... SELECT`` over a key range of
a legacy table, committed with its checkpoint; unmappable rows go to a quarantine in the
same transaction; workers on any number of hosts share the chunks through the database.
This package re-exports the public entry points of its modules (one job each; README's
module map lists them).
"""

from __future__ import annotations

from unistatus.backfill.activity import read_workers
from unistatus.backfill.control import current_tuning, pause, resume, tune
from unistatus.backfill.progress import progress
from unistatus.backfill.quarantine import quarantine_count, retry_quarantine
from unistatus.backfill.runner import BackfillReport, SystemReport, run_backfill
from unistatus.backfill.undo import undo

__all__ = [
    "BackfillReport",
    "SystemReport",
    "current_tuning",
    "pause",
    "progress",
    "quarantine_count",
    "read_workers",
    "resume",
    "retry_quarantine",
    "run_backfill",
    "tune",
    "undo",
]
