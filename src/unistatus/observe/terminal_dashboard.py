"""The migration dashboard in the terminal: the web dashboard's content, drawn with Rich.

One frame is :func:`render` of a :class:`~unistatus.observe.metrics.Snapshot` and the alert
state; :func:`run` redraws it every ``interval`` seconds in a Rich ``Live`` view.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from unistatus.config import Settings
from unistatus.errors import StorageError
from unistatus.observe.alert_state import load_states
from unistatus.observe.history import read_history
from unistatus.observe.metrics import (
    DEFAULT_WINDOW_SECONDS,
    Snapshot,
    collect_snapshot,
    judged_consistency,
)
from unistatus.observe.phase_progress import RETIREMENT_STEPS
from unistatus.observe.sparklines import TERMINAL_POINTS, history_table
from unistatus.shown import as_text

__all__ = ["frame", "judged_frame", "render", "run"]

BAR_WIDTH = 20


def _bar(percent: float | None) -> Text:
    if percent is None:
        return Text("unknown".ljust(BAR_WIDTH + 6), style="dim")
    filled = round(BAR_WIDTH * max(0.0, min(percent, 100.0)) / 100)
    text = Text("█" * filled, style="green" if percent >= 100 else "blue")
    text.append("░" * (BAR_WIDTH - filled), style="dim")
    text.append(f" {percent:5.1f}%")
    return text


def _pct(ratio: float | None, digits: int = 3) -> str:
    return "unknown" if ratio is None else f"{ratio * 100:.{digits}f}%"


def _style(value: float | None, warn: float, bad: float, higher_is_worse: bool = True) -> str:
    if value is None:
        return "dim"
    if higher_is_worse:
        return "red" if value > bad else "yellow" if value > warn else "green"
    return "red" if value < bad else "yellow" if value < warn else "green"


def render(
    snap: Snapshot,
    alerts: list[dict[str, Any]],
    health: str | None = None,
    history: dict[str, Any] | None = None,
) -> RenderableType:
    """One frame of the dashboard (a Rich renderable)."""
    title = _title(health)
    if not snap.database_up:
        return Panel(
            Text(f"database unreachable: {snap.database_error}", style="bold red"), title=title
        )

    perf = Table.grid(padding=(0, 2))
    perf.add_column(style="dim")
    perf.add_column()
    p95 = snap.perf("p95_ms")
    count = int(snap.perf("count") or 0)
    err = snap.perf("error_rate") if count else None
    if snap.performance is None:
        perf.add_row("operations", Text("unknown", style="dim"))
    else:
        perf.add_row(
            "p95 latency",
            Text("no operations" if p95 is None else f"{p95:.1f} ms", style=_style(p95, 200, 500)),
        )
        perf.add_row(
            "error rate",
            Text("no operations" if err is None else _pct(err, 2), style=_style(err, 0.001, 0.01)),
        )
        # Not in the ops, nor the error rate: rolled back by the caller, refused for input.
        rolled_back = int(snap.perf("rolled_back") or 0)
        refused = int(snap.perf("refused") or 0)
        perf.add_row(
            "throughput",
            f"{snap.perf('throughput_per_s') or 0:.2f}/s ({count} ops"
            + (f", {rolled_back} rolled back by the caller" if rolled_back else "")
            + (f", {refused} refused" if refused else "")
            + ")",
        )
        perf.add_row("shadow mismatches", str(int(snap.perf("shadow_mismatches") or 0)))

    quality = Table.grid(padding=(0, 2))
    quality.add_column(style="dim")
    quality.add_column()
    mapping = snap.mapping
    quality.add_row(
        "mapping coverage",
        Text(
            f"{_pct(mapping.get('coverage'), 0)} ({mapping.get('total_mapped')}/{mapping.get('total_legacy')})",
            style="green" if mapping.get("ok") else "red",
        ),
    )
    rate = snap.consistency_rate
    no_check = not snap.last_check and snap.sources.get("check") == "ok"
    judged, awaiting = judged_consistency(snap)
    shown = Text(
        "no check yet" if no_check else _pct(rate),
        style=_style(judged if awaiting else rate, 0.999, 0.99, higher_is_worse=False),
    )
    if awaiting:  # what the alerts and gates judge, and why it differs
        shown.append(
            f" ({awaiting:,} rows awaiting backfill; {_pct(judged)} without them, as the "
            "alerts judge)",
            style="dim",
        )
    quality.add_row("consistency", shown)
    check = snap.last_check
    if check:
        passed = check.get("inconsistent") == 0
        quality.add_row(
            "validation",
            Text(
                ("passing" if passed else f"failing ({check.get('inconsistent')})")
                + f"  {check.get('consistent')}/{check.get('total')}"
                # A round of continuous verification: of the rows changed since then.
                + (f" changed since {check['since']}" if check.get("since") else "")
                + f" at {check.get('created_at')}",
                style="green" if passed else "red",
            ),
        )
    else:
        quality.add_row(
            "validation",
            Text("no check yet" if snap.sources.get("check") == "ok" else "unknown", style="dim"),
        )
    quality.add_row(
        "repair queue / quarantine", f"{_known(snap.repair_open)} / {_known(snap.quarantine)}"
    )
    conflicts = snap.replay_conflicts
    quality.add_row(
        "replay conflicts",
        Text(
            "unknown"
            if conflicts is None
            else f"{conflicts} open: `unistatus rollback conflicts`"
            if conflicts
            else "0 open",
            style="dim" if conflicts is None else "bold red" if conflicts else "green",
        ),
    )

    _replay_pending_row(quality, snap)

    progress = Table(show_header=False, box=None, padding=(0, 1))
    progress.add_column(no_wrap=True)
    progress.add_column(no_wrap=True)
    for bar in snap.phase_bars():
        label = Text(f"Phase {bar['phase']}: {bar['name']}", style="bold" if bar["current"] else "")
        progress.add_row(label, _bar(bar["percent"]))
        for step in _retirement_steps(bar.get("steps")):
            progress.add_row(step, "")
    if snap.progress is None:
        progress.add_row(Text("backfill", style="dim"), Text("unknown", style="dim"))
    else:
        for system, info in snap.progress.items():
            progress.add_row(f"  {system} ({info.get('state', '')})", _bar(info.get("percent")))
    _throttle_rows(progress, snap.backfill_throttle)

    firing = [a for a in alerts if a.get("state") == "firing"]
    alert_table = Table(show_header=False, box=None)
    alert_table.add_column()
    if health == "unknown":  # the alerts could not be read
        alert_table.add_row(Text("unknown", style="dim"))
    elif not firing:
        alert_table.add_row(Text("none firing", style="green"))
    for a in firing:
        style = "bold red" if a["level"] == "critical" else "yellow"
        line = as_text(f"{a['level'].upper()} {a['name']}: {a['message']}")  # names writers
        alert_table.add_row(Text(line, style=style))

    parts: list[RenderableType] = [
        _where(snap),
        Panel(perf, title=f"Performance (last {snap.window_seconds / 60:.0f} min)"),
        _history_panel(history),
        Panel(quality, title="Data quality"),
        Panel(progress, title="Migration progress"),
        Panel(_bypass_table(snap), title="Writers bypassing unistatus (capture)"),
        Panel(alert_table, title="Firing alerts"),
    ]
    unknown = snap.unknown
    if unknown:
        parts.append(
            Panel(
                Text("\n".join(f"{k}: {v}" for k, v in unknown.items()), style="dim"),
                title="Unknown",
            )
        )
    return Panel(
        Group(*parts), title=title, subtitle=snap.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    )


# The most recent writers the terminal has room for (the web dashboard shows more).
BYPASS_ROWS = 5


def _bypass_table(snap: Snapshot) -> Table:
    """Who wrote the legacy tables (or unified) not through unistatus: name, system,
    rows written, last seen; most recent first."""
    table = Table(box=None, padding=(0, 1))
    bypass = snap.bypass
    if bypass is None or not bypass.enabled:
        table.add_column()
        why = "unknown" if bypass is None else "capture not enabled: `unistatus capture enable`"
        table.add_row(Text(why, style="dim"))
        return table
    if not bypass.writers:
        table.add_column()
        table.add_row(Text("none seen", style="green"))
        return table
    for name in ("writer", "system", "rows", "last seen"):
        table.add_column(name, justify="right" if name == "rows" else "left", no_wrap=True)
    for w in bypass.writers[:BYPASS_ROWS]:
        seen = w.last_seen_at.strftime("%Y-%m-%d %H:%M:%S") if w.last_seen_at else "-"
        table.add_row(Text(as_text(w.writer), style="yellow"), w.system, f"{w.writes:,}", seen)
    if len(bypass.writers) > BYPASS_ROWS:
        table.add_row(Text(f"... {len(bypass.writers) - BYPASS_ROWS} more", style="dim"))
    return table


# "unknown": the alerts could not be read (no unistatus tables, say); "down": no database.
HEALTH_STYLES = {"healthy": "green", "degraded": "yellow", "unknown": "yellow"}


def _title(health: str | None) -> Text:
    """Short enough for 80 columns: Rich crops a long title, and the health word came last."""
    title = Text("Migration dashboard", style="bold")
    if health:
        title.append(f"  {health}", style=HEALTH_STYLES.get(health, "red"))
    return title


def _where(snap: Snapshot) -> Text:
    """Mode and phase on their own line, which wraps instead of being cropped."""
    phase = "unknown" if snap.phase is None else f"{snap.phase}: {snap.as_dict()['phase_name']}"
    line = Text(f"mode {snap.mode or 'unknown'}", style="bold cyan")
    line.append(f"   phase {phase}", style="bold magenta")
    # Each system's own mode and phase (they move one at a time).
    for system, info in (snap.systems or {}).items():
        line.append(f"\n  {system.lower():<9}", style="bold")
        line.append(f"phase {info.get('phase')} ", style="magenta")
        line.append(str(info.get("mode")), style="cyan")
        rate = info.get("consistency_rate")
        if rate is not None:
            line.append(f"  consistency {rate * 100:.2f}%")
    return line


def _history_panel(history: dict[str, Any] | None) -> Panel:
    """Sparklines of the last hour (``None``: the history could not be read)."""
    body: RenderableType = (
        Text("unknown", style="dim") if history is None else history_table(history)
    )
    return Panel(body, title="Last hour (p95, errors, throughput: of writes)")


def _replay_pending_row(quality: Table, snap: Snapshot) -> None:
    """In phase 4 only: what a rollback would have to replay into legacy first."""
    if snap.phase != 4:
        return
    pending = snap.replay_pending
    quality.add_row(
        "rollback would replay",
        Text("unknown", style="dim")
        if pending is None
        else f"{pending} change{'' if pending == 1 else 's'}",
    )


THROTTLE_STYLES = {"waiting": "yellow", "paused": "cyan", "running": "green", "idle": "dim"}


def _throttle_rows(table: Table, view: dict[str, Any] | None) -> None:
    """The backfill's throttle under its bars: running or waiting and why, the batch."""
    if view is None:
        table.add_row(Text("  throttle", style="dim"), Text("unknown", style="dim"))
        return
    table.add_row("  throttle", Text(view["summary"], style=THROTTLE_STYLES[view["state"]]))
    for held in view["waiting"]:
        table.add_row(
            Text(f"    {held['worker']}", style="dim"),
            Text(f"{held['why']} for {held['seconds'] or 0:.0f} s", style="yellow"),
        )
    if not view["workers"]:
        return
    target = view["target_batch_ms"]
    batch = f"{view['batch_rows']:,} rows, target " + (
        f"{target:g} ms" if target else "off (fixed batches)"
    )
    if view["last_batch_ms"] is not None:
        batch += f"; last {view['last_batch_rows']:,} in {view['last_batch_ms']:.0f} ms"
    table.add_row("  batch", batch)
    rate = view["max_rows_per_second"]
    paced = view["held_seconds"].get("max_rows_per_second", 0.0)
    table.add_row(
        "  rate limit",
        "off" if rate is None else f"{rate:,.0f} rows/s (held {paced:.0f} s so far)",
    )


def _retirement_steps(steps: dict[str, bool] | None) -> list[Text]:
    """Phase 4's steps under its bar: what is done and what is left."""
    return [
        Text(
            f"  {label}: {'done' if steps[key] else 'not yet'}",
            style="green" if steps[key] else "dim",
        )
        for key, label in RETIREMENT_STEPS.items()
        if steps is not None and key in steps
    ]


def _known(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def frame(
    engine: sa.Engine, settings: Settings, *, window_seconds: float = DEFAULT_WINDOW_SECONDS
) -> RenderableType:
    """Read everything from the database and render one frame."""
    return judged_frame(engine, settings, window_seconds=window_seconds)[0]


def judged_frame(
    engine: sa.Engine, settings: Settings, *, window_seconds: float = DEFAULT_WINDOW_SECONDS
) -> tuple[RenderableType, str]:
    """One frame and the health its header says (healthy, degraded, unknown, down)."""
    snap = collect_snapshot(engine, settings, window_seconds=window_seconds)
    alerts: list[dict[str, Any]] = []
    health = None
    if snap.database_up:
        try:
            alerts = [s.as_dict() for s in load_states(engine)]
        except sa.exc.DBAPIError:
            # No alert read is not "none firing": the header must not say healthy.
            health = "unknown"
        else:
            critical = any(a["state"] == "firing" and a["level"] == "critical" for a in alerts)
            health = "degraded" if critical else "healthy"
    else:
        health = "down"
    history = _read_history(engine, snap) if snap.database_up else None
    return render(snap, alerts, health, history), health


def _read_history(engine: sa.Engine, snap: Snapshot) -> dict[str, Any] | None:
    """The last hour, its checks judged against the frame's populations (its figure)."""
    try:
        return read_history(engine, points=TERMINAL_POINTS, populations=snap.populations).as_dict()
    except StorageError:
        return None


def run(
    engine: sa.Engine,
    settings: Settings,
    *,
    once: bool = False,
    interval: float = 5.0,
    console: Console | None = None,
) -> str | None:
    """Draw the dashboard once (then the health it said), or redraw it every
    ``interval`` s until interrupted."""
    console = console or Console()
    if once:
        shown, health = judged_frame(engine, settings)
        console.print(shown)
        return health
    with Live(frame(engine, settings), console=console, refresh_per_second=2, screen=False) as live:
        while True:
            time.sleep(interval)
            live.update(frame(engine, settings))
