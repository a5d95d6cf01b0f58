"""`unistatus repair`: make legacy and unified agree, one audited entity at a time."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape

from unistatus.cli.context import (
    EXIT_FAILED_CHECK,
    EXIT_INTERRUPTED,
    EXIT_OK,
    REASON_HELP,
    console,
    err_console,
    parse_systems,
    print_json,
    require_reason,
    state,
)
from unistatus.shown import as_markup

if TYPE_CHECKING:
    from unistatus.migration.repair_report import RepairReport

HELP = "\n\n".join(
    [
        "Repair what a fresh set-based check finds, plus the adapter's repair queue.",
        (
            "Each entity is repaired in its own transaction (legacy row locked, then unified) "
            "with one history row (triggered_by=repair, strategy, before/after values)."
        ),
        "missing_unified: the unified row is created from legacy (any strategy).",
        "status_mismatch, field_mismatch: the winning side is copied onto the other.",
        (
            "legacy_status_drift: the unified row's legacy_status is set from the legacy row "
            "(whatever the strategy; the statuses already agree)."
        ),
        (
            "orphan_unified: reported, never repaired (a money record is never deleted and a "
            "removed legacy row is never re-created; an operator decides)."
        ),
        (
            "unmappable_legacy: reported, never repaired (extend the mapping, then run `unistatus"
            " backfill --retry-quarantine`)."
        ),
        (
            "missing_legacy (a create acknowledged under primary_wins while legacy refused its "
            "INSERT): in a dual mode its legacy row is created (any strategy) from the "
            "legacy_values the create kept and unified's current status; refused again, it "
            "counts as failed and stays queued."
        ),
        (
            "In UNIFIED_ONLY legacy is frozen (a rollback replays it): only legacy_status_drift "
            "of a transaction with no change awaiting replay is repaired; the rest is skipped "
            "(legacy_frozen)."
        ),
        (
            "Exit 0 when nothing was left unrepaired, 1 when something was skipped, failed or "
            "not found (named by the queue or --from, held by neither side), or when --dry-run "
            "found something it would repair (0: nothing would change)."
        ),
        (
            '--json: the report. "repaired" counts the entities written; a --dry-run writes '
            'none: "dry_run": true, "repaired": 0, and what it would repair in '
            '"would_repair" (per kind: "would_repair_kinds").'
        ),
        "--reason is required unless --dry-run; it is recorded in every history row written.",
        (
            "--from FILE (a `unistatus check --out FILE`): repair exactly the entities it "
            "lists (each re-judged under its locks), not the queue nor a fresh detection; a "
            "malformed line refuses the file (exit 2, naming the line) before anything is "
            "written."
        ),
        (
            "Progress goes to stderr: a bar on a terminal (entities examined, of the file's "
            "when --from), a line every 10 s in a log, none with --json."
        ),
        "Examples:",
        (
            "  unistatus repair --strategy legacy_wins --dry-run\n"
            '  unistatus repair --strategy legacy_wins --reason "after the 02:10 incident"\n'
            "  unistatus check --out mismatches.jsonl || test $? -eq 1 &&\n"
            "    unistatus repair --from mismatches.jsonl --strategy legacy_wins \\\n"
            '      --reason "INC-42"    (check exits 1 when it finds mismatches)\n'
            "  unistatus repair --system escrow --strategy unified_wins \\\n"
            '    --reason "escrows are unified-primary"'
        ),
    ]
)


def repair(
    ctx: typer.Context,
    strategy: str = typer.Option(
        ...,
        "--strategy",
        help="unified_wins, legacy_wins or newest_wins (by updated time; a tie goes to the "
        "side the current mode reads).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan and count; write nothing."),
    limit: int = typer.Option(None, "--limit", min=1, help="Repair at most N entities."),
    reason: str = typer.Option(None, "--reason", help=f"{REASON_HELP} Not for --dry-run."),
    actor: str = typer.Option("cli", "--actor", help="Who runs the repair (recorded)."),
    from_file: str = typer.Option(
        None, "--from", help="Repair exactly the entities of a `check --out` file."
    ),
    system: Annotated[
        list[str] | None,
        typer.Option(
            "--system",
            help="Only this legacy system's entities: cashout, escrow, exchange or all "
            "(repeatable). Default: all. Name it when the systems are in different phases: "
            "each one's strategy follows its own primary side.",
        ),
    ] = None,
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    from unistatus.cli.progress_view import item_progress
    from unistatus.migration.repair import RepairInterrupted, run_repair

    # A dry run writes nothing: its reason is optional (and a blank one is none).
    why = (
        require_reason(reason, "repair", dry_run=True)
        if not dry_run
        else (reason or "").strip() or None
    )
    app = state(ctx)
    try:
        with item_progress("repair", "examined", json_out=json_out) as shown:
            report = run_repair(
                app.engine,
                app.settings,
                strategy=strategy,
                dry_run=dry_run,
                limit=limit,
                actor=actor,
                reason=why,
                from_file=from_file,
                systems=parse_systems(system),
                on_progress=lambda so_far, total: shown(so_far.examined, total),
            )
    except RepairInterrupted as stop:
        # The command to run again, as given (its --from, --system and --strategy).
        again = shlex.join(
            ["unistatus", "repair", "--strategy", strategy]
            + (["--from", from_file] if from_file is not None else [])
            + [arg for name in system or () for arg in ("--system", name)]
            + (["--limit", str(limit)] if limit is not None else [])
            + (["--actor", actor] if actor != "cli" else [])
            + (["--dry-run"] if dry_run else ["--reason", why or ""])
        )
        _interrupted(stop.report.as_dict(), json_out, again)
    if from_file is not None and report.examined == 0:
        # Of the systems named: a file of other systems' lines lists some, not none.
        of = f" of {', '.join(system)}" if system else ""
        err_console.print(f"[yellow]{from_file} lists no entity{of}: nothing to repair[/]")
    if json_out:
        print_json(report.as_dict())
    else:
        _print(report.as_dict())
    raise typer.Exit(_exit_code(report))


def _exit_code(report: RepairReport) -> int:
    """1 while inconsistencies remain after the run: left unrepaired (skipped, failed,
    not found), or found by a dry run, which repairs nothing (it exited 0, as a run that
    repaired them all); 0 when nothing is left, or nothing would change."""
    return EXIT_FAILED_CHECK if report.remaining or report.would_repair else EXIT_OK


def _interrupted(data: dict[str, Any], json_out: bool, again: str) -> NoReturn:
    """Ctrl-C or SIGTERM: one line saying how many were repaired (the report so far
    under --json, marked interrupted), exit 130."""
    if json_out:
        print_json({**data, "interrupted": True})
    if data["dry_run"]:
        done = f"{data['would_repair']:,} would be repaired so far (nothing written)"
    else:
        done = (
            f"{data['repaired']:,} repaired, each committed on its own and kept (the one in "
            "hand may have been rolled back)"
        )
    err_console.print(
        f"interrupted: {done}; run `{escape(again)}` again to go on (it finds what is left)",
        style="yellow",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_INTERRUPTED)


def _print(data: dict[str, Any]) -> None:
    verb, key = ("would repair", "would_repair") if data["dry_run"] else ("repaired", "repaired")
    console.print(
        f"[bold]{verb} {data[key]:,}[/] entities ({data['strategy']}); "
        f"{data['already_consistent']:,} already consistent; failed {data['failed']:,}"
    )
    for kind, count in data[f"{key}_kinds"].items():
        console.print(f"  {kind}: {count:,}")
    if data["not_found"]:
        console.print(
            f"  [yellow]not found[/] (neither side holds them): {data['not_found']:,}",
            highlight=False,
        )
    for reason, count in data["skipped"].items():
        console.print(f"  [yellow]left for an operator[/] {escape(reason)}: {count:,}")
    queue = data["repair_queue"]
    console.print(f"repair queue: {queue['seen']:,} seen, {queue['resolved']:,} resolved")
    if data["limit_reached"]:
        console.print(f"[yellow]stopped at --limit {data['limit']}; run again for the rest[/]")
    for error in data["errors"]:
        console.print(f"  [red]{as_markup(error)}[/]")  # the database's words, as text
    for warning in data["warnings"]:
        err_console.print(f"[yellow]warning:[/] {as_markup(warning)}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("repair", help=HELP)(repair)
