"""Historical backfill of ``unified_transactions`` from the legacy tables.

Set-based and exactly once: each batch is one ``INSERT ... SELECT`` over a key range of
a legacy table (status mapped in SQL, existing unified rows left untouched), committed
together with its checkpoint; unmappable rows go to a quarantine in the same
transaction. Workers on any number of processes or hosts share the key-range chunks
through the database. The modules, one job each:

- :mod:`.statements` the SQL (unified insert, quarantine, dry-run counts)
- :mod:`.plan`       high-water mark and chunks, planned once per job, joined on rerun
- :mod:`.batch`      one batch: claim, copy, quarantine, checkpoint (compiled once)
- :mod:`.worker`     the batch loop: throttle, pause, retry timed-out batches
- :mod:`.runner`     ``run_backfill`` and its report, worker processes
- :mod:`.progress`   progress per system, from the database, for any process
- :mod:`.control`    ``pause`` / ``resume``
- :mod:`.quarantine` ``quarantine_count`` / ``retry_quarantine``
- :mod:`.undo`       ``undo`` (remove backfilled rows no live write has touched)
"""

from __future__ import annotations

from unistatus.backfill.control import pause, resume
from unistatus.backfill.progress import progress
from unistatus.backfill.quarantine import quarantine_count, retry_quarantine
from unistatus.backfill.runner import BackfillReport, SystemReport, run_backfill
from unistatus.backfill.undo import undo

__all__ = [
    "BackfillReport",
    "SystemReport",
    "pause",
    "progress",
    "quarantine_count",
    "resume",
    "retry_quarantine",
    "run_backfill",
    "undo",
]
