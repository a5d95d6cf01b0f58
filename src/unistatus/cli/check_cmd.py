"""`unistatus check`: the full legacy/unified diff, stored for gates, alerts and the dashboard."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from unistatus.cli.context import (
    EXIT_FAILED_CHECK,
    EXIT_OK,
    console,
    parse_system,
    print_json,
    state,
)


def check(
    ctx: typer.Context,
    system: Annotated[
        list[str] | None,
        typer.Option(
            "--system", help="cashout, escrow, exchange or all (repeatable). Default: all."
        ),
    ] = None,
    examples: int = typer.Option(
        10, "--examples", min=0, help="How many inconsistent rows to show and store."
    ),
    since: str = typer.Option(
        None,
        "--since",
        help="Only rows updated since TIME: ISO (2026-01-31T12:00:00Z), an age (30m, 1h, 2d), "
        "or phase-start (when the current phase was entered: what the gate into phase 2 reads).",
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Compare every legacy row with its unified row (set-based, by key ranges).

    Kinds: missing_unified, orphan_unified (unified row whose legacy row is gone),
    status_mismatch, field_mismatch (user, amount, currency), unmappable_legacy,
    legacy_status_drift (statuses agree, but the unified row's exact copy of the legacy
    status is stale: undoing the retirement would restore the wrong value; `repair`).
    The report is stored. Exit 0 when fully consistent, 1 otherwise, 2 on errors.

    Examples:

      unistatus check
      unistatus check --since phase-start
      unistatus check --since 1h --examples 50
      unistatus check --system cashout --system escrow --json
    """
    from unistatus.migration.check import run_check
    from unistatus.migration.phases import resolve_since

    app = state(ctx)
    # phase-start of the one system checked (each system has its own phase); of every
    # system (which must be in one phase) otherwise.
    chosen = {parse_system(s) for s in system or []}
    one = chosen.pop() if len(chosen) == 1 else None
    report = run_check(
        app.engine,
        app.settings,
        systems=system or None,
        since=resolve_since(app.engine, since, one),
        examples=examples,
    )
    if json_out:
        print_json(report.as_dict())
    else:
        _print(report.as_dict())
    raise typer.Exit(EXIT_OK if report.is_consistent else EXIT_FAILED_CHECK)


def _print(data: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"consistency check ({data['scope']})")
    table.add_column("kind")
    table.add_column("rows", justify="right")
    for kind, count in data["inconsistencies"].items():
        table.add_row(kind, f"{count:,}", style="red" if count else None)
    console.print(table)
    rate = data["consistency_rate"] * 100
    colour = "green" if data["consistent"] == data["total"] else "red"
    console.print(
        f"[{colour}]{data['consistent']:,} of {data['total']:,} consistent ({rate:.4f}%)[/]"
        f" in {data['duration_ms'] / 1000:.2f} s ({data['rows_per_second']:,.0f} rows/s);"
        f" report #{data['id']}"
    )
    for ex in data["examples"]:
        ref = f"{ex['system'].lower()}:{ex['legacy_id']}"
        parts = [
            f"{d['kind']}"
            + (
                f" {d['field']}: {d['legacy_value']!r} vs {d['unified_value']!r}"
                if d["field"]
                else ""
            )
            for d in ex["details"]
        ]
        console.print(f"  {ref} ({ex['transaction_id'] or 'no unified row'}): {'; '.join(parts)}")


def register(app: typer.Typer) -> None:
    app.command("check")(check)
