"""`unistatus plan`: every phase still ahead, measured now, in the style of `terraform plan`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from unistatus.cli.context import SystemOption, console, parse_system, print_json, state

if TYPE_CHECKING:
    from unistatus.migration.rollout_figures import Cost
    from unistatus.migration.rollout_plan import PhasePlan, RollbackPreview, RolloutPlan


def duration(seconds: float | None) -> str:
    """``~ 1 h 05 min``, ``~ 42 s``, ``~ 0.3 s``; ``unknown`` when not measured."""
    if seconds is None:
        return "unknown"
    if seconds < 10:
        return f"~ {seconds:.1f} s"
    if seconds < 120:
        return f"~ {seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 120:
        return f"~ {minutes:.0f} min"
    return f"~ {int(minutes // 60)} h {int(minutes % 60):02d} min"


def _figures_table(plan: RolloutPlan) -> object:
    from rich import box
    from rich.table import Table

    table = Table(
        title="rows and rates, measured now",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for name in ("system", "legacy", "to copy", "pending", "backfill/s", "check/s", "archive/s"):
        table.add_column(name, justify="left" if name == "system" else "right", no_wrap=True)
    for system, f in plan.figures.items():

        def rate(cost: Cost | None) -> str:
            return "-" if cost is None else f"{cost.rows_per_second:,.0f}"

        table.add_row(
            system.value,
            f"{f.legacy_rows:,}",
            "-" if f.missing_unified is None else f"{f.missing_unified:,}",
            f"{f.pending_changes:,}",
            rate(f.backfill),
            rate(f.check),
            rate(f.archive),
        )
    return table


def _indented(text: object, left: int) -> None:
    """``text`` with every wrapped line ``left`` columns in (plans are read at 80)."""
    from rich.padding import Padding

    console.print(Padding(text, (0, 0, 0, left)), highlight=False)  # type: ignore[arg-type]


def replay_line(estimate: dict[str, Any]) -> str:
    """The replay's size and time: ``not measured`` without a rate from an earlier
    rollback, never a made-up one."""
    changes = estimate.get("changes", 0)
    if not changes:
        return "replay: nothing to write to legacy now"
    rate = estimate.get("rate")
    if rate is None:
        return f"replay: {changes} change(s) to legacy, time not measured (no earlier replay)"
    return (
        f"replay: {changes} change(s) to legacy, {duration(estimate['estimate_seconds'])} at "
        f"{rate['changes_per_second']:,.0f} changes/s (measured by {rate['rollbacks']} "
        "earlier rollback(s))"
    )


def _rollback_lines(label: str, rb: RollbackPreview) -> None:
    _indented(f"[bold]{label}:[/] {rb.command} -> phase {rb.to_phase} ({rb.to_mode.value})", 4)
    for action in rb.actions:
        _indented(f"- {action}", 6)
    if rb.estimate:
        _indented(f"[dim]{replay_line(rb.estimate)}[/]", 6)


def _phase(p: PhasePlan) -> None:
    from unistatus.cli.phase_cmd import gate_table

    mark = "[green]+[/]" if p.ready else "[yellow]~[/]"
    tag = " (next)" if p.next else ""
    console.print(
        f"\n  {mark} [bold]phase {p.phase} ({p.name})[/]{tag}: mode {p.mode.value}, "
        f"work {duration(p.estimate_seconds)}"
        + (f", then wait {duration(p.wait_seconds)} (soak)" if p.wait_seconds else ""),
        highlight=False,
    )
    if p.gates:
        failing = sum(not g.passed for g in p.gates)
        title = f"    gates now: {len(p.gates) - failing} pass, {failing} fail"
        _indented(gate_table(p.gates, title.strip()), 4)
    _indented("[bold]commands:[/]", 4)
    for step in p.steps:
        when = f"  [dim]{duration(step.estimate_seconds)}[/]" if step.estimate_seconds else ""
        _indented(f"$ {step.command}{when}", 6)
        _indented(f"[dim]{step.why}[/]", 8)
    _rollback_lines("rollback", p.rollback)


def summary_line(plan: RolloutPlan) -> str:
    s = plan.summary()
    if not plan.phases:
        return (
            f"Plan: phase {plan.phase} is the last; nothing to advance. A rollback would "
            f"replay {s['replay_changes']} change(s). Nothing was changed."
        )
    wait = f" + {duration(s['wait_seconds'])} soak" if s["wait_seconds"] else ""
    return (
        f"Plan: {s['phases']} phase(s) ahead, {s['commands']} command(s), "
        f"{s['gates_failing']} of {s['gates']} gate(s) failing now; work "
        f"{duration(s['estimate_seconds'])}{wait}; a rollback now would replay "
        f"{s['replay_changes']} change(s). Nothing was changed."
    )


def plan(
    ctx: typer.Context,
    system: SystemOption = None,
    sample_rows: int = typer.Option(
        2000,
        "--sample-rows",
        min=0,
        help="Legacy rows per system to time the backfill and check on (0: reads only, "
        "no estimates).",
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output (shape: docs/phases.md)."),
) -> None:
    """Show every phase still ahead: gates now, commands, rollbacks, time estimates.

    Changes nothing: gates and counts are read; the backfill's statement is timed on a
    sample in a transaction that is rolled back, the check's only reads. Exit 0 whatever
    the gates say (`phase status` exits 1 on a failing gate).

    Examples:

      unistatus plan

      unistatus plan --system cashout

      unistatus plan --json | jq .summary

      unistatus plan --sample-rows 0
    """
    from unistatus.migration.rollout_plan import rollout_plan

    chosen = parse_system(system)
    app = state(ctx)
    result = rollout_plan(app.engine, app.settings, system=chosen, sample_rows=sample_rows)
    if json_out:
        print_json(result.as_dict())
        return
    scope = f", system {chosen.value}" if chosen else ""
    console.print(
        f"unistatus plan: phase [bold]{result.phase}[/] ({result.as_dict()['name']}), mode "
        f"[bold]{result.mode.value}[/]{scope}",
        highlight=False,
    )
    console.print(_figures_table(result))
    for p in result.phases:
        _phase(p)
    console.print()
    _rollback_lines("emergency", result.emergency)
    for note in result.notes:
        console.print(f"[dim]note: {note}[/]", highlight=False)
    console.print(f"\n[bold]{summary_line(result)}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
