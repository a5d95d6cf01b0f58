"""The terminal dashboard's last hour: one sparkline per series of :mod:`~unistatus.observe.history`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

__all__ = ["TERMINAL_POINTS", "history_table", "sparkline"]

# 40 steps of 90 s: the panel fits in 80 columns with its labels and latest values.
TERMINAL_POINTS = 40
LEVELS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], *, low: float | None = 0.0) -> str:
    """One character per value, scaled from ``low`` (the smallest value if None) to the
    largest; a step without a value is a space, so a gap looks like one."""
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    lo = min(known) if low is None else low
    span = max(known) - lo
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif span <= 0:
            out.append(LEVELS[0] if low is not None and v <= lo else LEVELS[len(LEVELS) // 2])
        else:
            out.append(LEVELS[min(len(LEVELS) - 1, int((v - lo) / span * len(LEVELS)))])
    return "".join(out)


def history_table(history: dict[str, Any]) -> Table:
    """p95, error rate, throughput and consistency, oldest on the left, latest value right."""
    points = history["points"]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    p95 = [p["p95_ms"] for p in points]
    errors = [p["error_rate"] for p in points]
    throughput = [p["throughput_per_s"] for p in points]
    consistency = _consistency_steps(history, len(points))
    table.add_row("p95", Text(sparkline(p95), style="cyan"), _last(p95, "{:.1f} ms"))
    table.add_row("errors", Text(sparkline(errors), style="red"), _last(errors, "{:.2%}"))
    table.add_row(
        "throughput", Text(sparkline(throughput), style="blue"), _last(throughput, "{:.2f}/s")
    )
    table.add_row(
        "consistency",
        Text(sparkline(consistency, low=None), style="green"),
        _last(consistency, "{:.3%}"),
    )
    marks = _event_marks(history, len(points))
    if marks.strip():
        table.add_row("changes", Text(marks, style="magenta"), "mode/phase")
    return table


def _step_of(history: dict[str, Any], at: str, steps: int) -> int:
    since = datetime.fromisoformat(history["since"])
    seconds = (datetime.fromisoformat(at) - since).total_seconds()
    return min(steps - 1, max(0, int(seconds // float(history["step_seconds"]))))


def _event_marks(history: dict[str, Any], steps: int) -> str:
    """A ``^`` under each step in which the mode or the phase changed."""
    marks = [" "] * steps
    for event in history["events"]:
        marks[_step_of(history, event["t"], steps)] = "^"
    return "".join(marks)


def _consistency_steps(history: dict[str, Any], steps: int) -> list[float | None]:
    """Each step holds the latest check result known at its end (a result stands until the
    next check), none before the first check of the hour."""
    out: list[float | None] = [None] * steps
    for check in history["consistency"]:
        i = _step_of(history, check["t"], steps)
        out[i:] = [check["rate"]] * (steps - i)
    return out


def _last(values: Sequence[float | None], fmt: str) -> str:
    known = [v for v in values if v is not None]
    return fmt.format(known[-1]) if known else "none"
