"""`unistatus mapping`: the forward mappings (the 38 and the config's extra values),
reverse mappings, and their validation."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from unistatus.cli.context import (
    EXIT_FAILED_CHECK,
    abort,
    console,
    parse_system,
    print_json,
    state,
)

HELP = (
    "Show the status mapping (legacy -> unified, and unified -> legacy per type, with the "
    "allowed transitions). It includes the extra legacy values of the config "
    # \[: Rich would take "[mapping.CASHOUT]" for markup and drop it.
    '(\\[mapping.CASHOUT] REFUND_REQUESTED = "CANCELLED"); a bad one exits 2.\n\n'
    "--validate checks it instead: every legacy value mapped, every valid unified status "
    "reversible, forward(reverse(u)) compatible, all 16 unified statuses reachable. It exits "
    "1 unless coverage is 100% and nothing is wrong. It covers every system: --system "
    "cannot narrow it (all is accepted).\n\n"
    "Examples:\n\n"
    "  unistatus mapping\n\n"
    "  unistatus mapping --system escrow\n\n"
    "  unistatus mapping --validate --json"
)


def mapping(
    ctx: typer.Context,
    system: Annotated[
        list[str] | None,
        typer.Option("--system", help="Only this legacy system: cashout, escrow, exchange or all."),
    ] = None,
    validate: bool = typer.Option(False, "--validate", help="Validate; exit 1 on any problem."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    from unistatus.domain.mapping import LegacyStatusMapper, mapping_rows
    from unistatus.domain.statuses import LegacySystemType
    from unistatus.domain.transitions import TransitionRules

    _ = state(ctx).settings  # loading them checks and registers the extra legacy values
    only = parse_system(system)
    mapper = LegacyStatusMapper()
    if validate:
        if only is not None:
            # Reachability of the unified statuses is a property of every system together.
            abort("--validate checks every system: drop --system (or give --system all)")
        report = mapper.validate()
        if json_out:
            print_json(report.as_dict())
        else:
            _print_report(report.as_dict())
        if not report.ok:
            raise typer.Exit(EXIT_FAILED_CHECK)
        return

    systems = [only] if only else list(LegacySystemType)
    wanted = {s.value for s in systems}
    rows = [r for r in mapping_rows() if r["system"] in wanted]
    rules = TransitionRules()
    types: dict[str, Any] = {}
    for s in systems:
        ttype = s.transaction_type
        reverse = mapper.reverse_table(ttype)
        types[ttype.value] = {
            "legacy_system": s.value,
            "valid_statuses": sorted(reverse),
            "reverse": reverse,
            "transitions": rules.graph(ttype),
        }
    if json_out:
        print_json({"mappings": rows, "types": types})
        return
    extra = sum(r["origin"] == "extra" for r in rows)
    of_config = f", {extra} from the config" if extra else ""
    table = Table(title=f"Forward mapping ({len(rows)} legacy statuses{of_config})")
    for col in ("system", "legacy", "unified", "origin"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["system"], r["legacy"], r["unified"], r["origin"])
    console.print(table)
    for ttype_name, info in types.items():
        rev = Table(title=f"{ttype_name}: valid unified statuses and their legacy value")
        rev.add_column("unified")
        rev.add_column("legacy (canonical)")
        rev.add_column("may change to")
        for unified, legacy in info["reverse"].items():
            targets = info["transitions"].get(unified, [])
            rev.add_row(unified, legacy, ", ".join(targets) or "(final)")
        console.print(rev)


def _print_report(data: dict[str, Any]) -> None:
    ok = data["ok"]
    console.print(
        f"mapping {'[green]valid[/]' if ok else '[bold red]INVALID[/]'}: "
        f"coverage {data['coverage']:.0%} ({data['total_mapped']}/{data['total_legacy']} "
        f"legacy statuses), {data['unified_reachable']}/{data['unified_total']} unified "
        "statuses reachable"
    )
    for system, counts in data["legacy"].items():
        console.print(f"  {system}: {counts['mapped']}/{counts['statuses']} mapped")
    for row in data["extra"]:
        console.print(
            f"  extra: {row['system']}.{row['legacy']} -> {row['unified']} (config)",
            highlight=False,
        )
    for problem in data["problems"]:
        console.print(f"  [red]problem:[/] {problem}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("mapping", help=HELP)(mapping)
