"""The consistency the alerts judge, from a check report (``CheckReport.as_dict``).

Two things separate it from the report's own rate:

- **Rows awaiting the backfill.** A legacy row of a system whose backfill is not complete
  yet has no unified row by design; counting it would make every check run during
  phase 2 look like a consistency collapse and trigger an emergency rollback of a
  healthy migration. Those ``missing_unified`` rows are left out of every report whose
  check started before that system's backfill completed (:func:`backfilled_before`);
  every other disagreement counts.
- **Reports of the rows changed since a time** (a round of continuous verification, a
  ``check --since``). They read those rows only: one mismatch among the few rows changed
  since the watermark is one row of the system, not its rate. Such a report is judged
  against the system's rows (``population``: as the latest full check of it counted
  them), the rows it did not read taken as that check left them (the report the alerts
  judge is that check while it holds inconsistencies, and one of recent changes that found
  a mismatch keeps that check's inconsistent rows:
  :func:`unistatus.migration.verify.judged_report`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from unistatus.clock import as_utc

__all__ = [
    "UNRECORDED_FINISH_MARGIN",
    "Population",
    "backfilled_before",
    "judged_counts",
    "judged_inconsistent_rows",
    "overall_consistency",
    "populations_of",
    "report_consistency",
    "system_consistency",
    "unjudged",
]

UNRECORDED_FINISH_MARGIN = timedelta(seconds=65)
# A system's rows and how many of them are inconsistent (its latest full check's).
Population = tuple[int, int]


def overall_consistency(
    report: Mapping[str, Any],
    progress: Mapping[str, Mapping[str, Any]],
    populations: Mapping[str, Population],
) -> tuple[float | None, int]:
    """Every system of ``report`` together as the alerts judge it: (rate, rows left out
    as awaiting the backfill). A system a report of recent changes cannot be judged for
    (:func:`unjudged`) is left out; None when that leaves none."""
    counts = _overall_counts(report, progress, populations)
    if counts is None:
        return None, 0
    rows, good, excluded = counts
    return (good / rows if rows else 1.0), excluded


def report_consistency(
    report: Mapping[str, Any] | None, populations: Mapping[str, Population]
) -> float | None:
    """Every system of ``report`` together over their rows, as the dashboards show it:
    the rate :func:`overall_consistency` judges with the rows awaiting the backfill
    counted (a report of the rows changed since a time over the systems' rows, never its
    own rate of the few rows it read). None when no system can be judged. A report that
    read every row (or without per-system figures): its own rate."""
    if not report:
        return None
    if report.get("since") is None or not report.get("per_system"):
        rate = report.get("consistency_rate")
        return float(rate) if rate is not None else None
    counts = _overall_counts(report, None, populations)
    if counts is None:
        return None
    rows, good, _ = counts
    return good / rows if rows else 1.0


def _overall_counts(
    report: Mapping[str, Any],
    progress: Mapping[str, Mapping[str, Any]] | None,
    populations: Mapping[str, Population],
) -> tuple[int, int, int] | None:
    """(rows, consistent, rows left out as awaiting the backfill) of every system of
    ``report`` it can be judged for; None when none. ``progress`` None: none left out."""
    total = consistent = excluded = judged = 0
    for system, info in (report.get("per_system") or {}).items():
        population = populations.get(system)
        if unjudged(report, population):
            continue
        judged += 1
        if progress is None:
            (rows, good), left_out = _read_counts(info, report, population), 0
        else:
            rows, good, left_out = judged_counts(info, progress.get(system), report, population)
        total += rows
        consistent += good
        excluded += left_out
    if not judged and report.get("per_system"):
        return None
    return total, consistent, excluded


def unjudged(report: Mapping[str, Any], population: Population | None) -> bool:
    """Whether ``report`` cannot say a system's rate: it read the rows changed since a
    time, and the system's rows are not known (no full check of it, no completed
    backfill). Its few rows are not the system: one bad row of one read 0% and rolled
    the system back (phase 1 asks for no full check)."""
    return report.get("since") is not None and population is None


def judged_counts(
    info: Mapping[str, Any],
    progress: Mapping[str, Any] | None,
    report: Mapping[str, Any],
    population: Population | None = None,
) -> tuple[int, int, int]:
    """One system's part of a report as the alerts judge it: (rows, consistent, rows
    left out as awaiting the backfill). ``population``: the system's rows, for a report
    of the rows changed since a time (see the module)."""
    rows, good = _read_counts(info, report, population)
    if backfilled_before(progress, info, report):
        return rows, good, 0
    missing = int((info.get("inconsistencies") or {}).get("missing_unified") or 0)
    return rows - missing, good, missing


def _read_counts(
    info: Mapping[str, Any], report: Mapping[str, Any], population: Population | None
) -> tuple[int, int]:
    """(rows, consistent) of one system's part of a report; a report of the rows changed
    since a time over the system's ``population`` (rows, inconsistent rows: as its full
    check counted them), the rows it did not read taken as that check left them: its
    inconsistent rows stay inconsistent (some may be among the rows the report read:
    counted twice then, never hidden)."""
    rows, good = int(info.get("total") or 0), int(info.get("consistent") or 0)
    if report.get("since") is not None and population is not None and population[0] > rows:
        unread = population[0] - rows
        rows, good = rows + unread, good + unread - min(population[1], unread)
    return rows, good


def backfilled_before(
    progress: Mapping[str, Any] | None, info: Mapping[str, Any], report: Mapping[str, Any]
) -> bool:
    """Whether a system's backfill had completed when the check of ``report`` (``info``:
    its part for that system) started reading it. A check that read while the last
    chunks were still being copied found their rows missing by design; judged against
    a backfill that completed since, they would look like rows lost."""
    if not (progress or {}).get("complete"):
        return False
    assert progress is not None
    completed = progress.get("completed_at")
    started = info.get("started_at") or report.get("started_at")
    if not completed or not started:
        return True  # a report or progress from before these times were kept
    done_at, read_at = (as_utc(datetime.fromisoformat(t)) for t in (completed, started))
    assert done_at is not None and read_at is not None
    if not progress.get("finished_at"):
        # Only the last batch's start is known: it may have gone on until its
        # statement timeout.
        done_at += UNRECORDED_FINISH_MARGIN
    return done_at <= read_at


def system_consistency(
    report: Mapping[str, Any] | None,
    system: str,
    progress: Mapping[str, Mapping[str, Any]] | None,
    population: Population | None = None,
) -> tuple[float | None, float | None]:
    """``system``'s consistency in a check report (``as_dict``), and the rate the alerts
    judge (its ``missing_unified`` rows left out unless its backfill had completed when the
    check started); both over ``population`` rows for a report of the rows changed
    since a time. (None, None) if the report did not cover it."""
    info = ((report or {}).get("per_system") or {}).get(system)
    if not info or unjudged(report or {}, population):
        return None, None
    rows, good = _read_counts(info, report or {}, population)
    rate = good / rows if rows else 1.0
    if progress is None:
        return rate, rate
    judged_rows, judged_good, _ = judged_counts(
        info, progress.get(system), report or {}, population
    )
    return rate, (judged_good / judged_rows if judged_rows else 1.0)


def judged_inconsistent_rows(
    report: Mapping[str, Any] | None,
    system: str,
    progress: Mapping[str, Mapping[str, Any]] | None,
    population: Population | None = None,
) -> int | None:
    """How many of ``system``'s rows the alerts judge inconsistent in a check report
    (``as_dict``; rows awaiting the backfill left out and a report of recent changes
    over ``population``, as :func:`system_consistency` does); None if the report did not
    cover it."""
    info = ((report or {}).get("per_system") or {}).get(system)
    if not info or unjudged(report or {}, population):
        return None
    if progress is None:
        rows, good = _read_counts(info, report or {}, population)
    else:
        rows, good, _ = judged_counts(info, progress.get(system), report or {}, population)
    return max(0, rows - good)


def populations_of(
    counted: Mapping[str, Population], progress: Mapping[str, Mapping[str, Any]]
) -> dict[str, Population]:
    """Each system's rows and inconsistent rows: as its latest full check counted them
    (``counted``), else its completed backfill's rows (none known inconsistent)."""
    out = dict(counted)
    for system, info in progress.items():
        if system not in out and info.get("complete") and info.get("total") is not None:
            out[system] = (int(info["total"]), 0)
    return out
