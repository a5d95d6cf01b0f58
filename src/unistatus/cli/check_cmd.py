"""`unistatus check`: the full legacy/unified diff, stored for gates, alerts and the dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from unistatus.cli.context import (
    EXIT_FAILED_CHECK,
    EXIT_INCOMPLETE,
    EXIT_OK,
    console,
    err_console,
    parse_systems,
    print_json,
    says_when_interrupted,
    state,
)
from unistatus.errors import InputError
from unistatus.shown import as_markup

if TYPE_CHECKING:
    import sqlalchemy as sa

    from unistatus.domain.statuses import LegacySystemType


def check(
    ctx: typer.Context,
    system: Annotated[
        list[str] | None,
        typer.Option(
            "--system", help="cashout, escrow, exchange or all (repeatable). Default: all."
        ),
    ] = None,
    examples: int | None = typer.Option(
        None,
        "--examples",
        min=0,
        help="How many inconsistent rows to show and store. Default: 10.",
    ),
    since: str = typer.Option(
        None,
        "--since",
        help="Only rows updated since TIME: ISO (2026-01-31T12:00:00Z), an age (30m, 1h, 2d), "
        "or phase-start (when the current phase was entered: what the gate into phase 2 reads).",
    ),
    out: str = typer.Option(
        None,
        "--out",
        help="Write every inconsistent pair to FILE, one JSON object a line (both sides' "
        "statuses, the fields that differ, both updated times): `repair --from FILE`.",
    ),
    max_duration: str = typer.Option(
        None,
        "--max-duration",
        help="Stop cleanly between key ranges after DURATION (90s, 10m, 1h); the report is "
        f"stored as incomplete and the run can be resumed (exit {EXIT_INCOMPLETE}).",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Go on with the latest interrupted run (killed, or stopped by --max-duration), "
        "with its options, from the last key range it committed.",
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Compare every legacy row with its unified row (set-based, by key ranges).

    Kinds: missing_unified, orphan_unified (unified row whose legacy row is gone),
    status_mismatch, field_mismatch (user, amount, currency), unmappable_legacy,
    legacy_status_drift (statuses agree, but the unified row's exact copy of the legacy
    status is stale: undoing the retirement would restore the wrong value; `repair`).
    A pair that looks inconsistent is re-read once no write to it is in flight (its
    rows locked FOR SHARE) before it is counted. The run commits its position after
    every key range. The report is stored, with complete true/false. Exit 0 when
    fully consistent, 1 otherwise, 2 on errors, 3 when --max-duration stopped it first.

    Examples:

      unistatus check
      unistatus check --since phase-start
      unistatus check --since 1h --examples 50
      unistatus check --system cashout --system escrow --json
      unistatus check --max-duration 10m --out mismatches.jsonl
      unistatus check --resume
    """
    from unistatus.migration.check import parse_duration, run_check
    from unistatus.migration.check_runs import SystemPosition
    from unistatus.migration.verify import verification_status

    app = state(ctx)
    seconds = parse_duration(max_duration)
    app.engine_seeing_every_row("check")

    def progress(system: Any, pos: SystemPosition) -> None:
        if not json_out:
            err_console.print(
                f"  {system.value.lower()}: {pos.ranges:,} ranges, {pos.counts['total']:,} rows"
                + (" (done)" if pos.done else f", up to key {pos.position}"),
                highlight=False,
            )

    # phase-start of the systems checked (each has its own phase; those named, or every
    # one, must be in one phase).
    chosen = set(parse_systems(system) or ())
    with says_when_interrupted(_what_next):
        report = run_check(
            app.engine,
            app.settings,
            systems=system or None,  # a resumed run refuses them, as --since and --out
            since=_since(app.engine, since, chosen),
            examples=examples,
            resume=resume,
            max_duration=seconds,
            out=out,
            on_range=progress,
        )
    data = report.as_dict()
    data["verification"] = verification_status(app.engine)
    data["unreplayed_changes"], data["unreplayed_note"] = _unreplayed(app.engine)
    if json_out:
        print_json(data)
    else:
        _print(data)
    if not report.complete:
        raise typer.Exit(EXIT_INCOMPLETE)
    raise typer.Exit(EXIT_OK if report.is_consistent else EXIT_FAILED_CHECK)


def _unreplayed(engine: sa.Engine) -> tuple[dict[str, int], str | None]:
    """Changes recorded in UNIFIED_ONLY never replayed, of systems no longer in it (the
    check judged their legacy as it is: stale), per system, and what to do."""
    from unistatus.migration.unreplayed import unreplayed_note, unreplayed_outside_unified_only

    with engine.connect() as conn:
        counts = unreplayed_outside_unified_only(conn)
    return {s.value: n for s, n in counts.items()}, unreplayed_note(counts)


def _what_next(stop: KeyboardInterrupt) -> str:
    """What an interrupted check leaves: ranges still to walk, or (the walks at once
    stop only after their current range, which may be their last) every range counted
    and the report not stored."""
    from unistatus.migration.check import CheckInterrupted

    if isinstance(stop, CheckInterrupted) and stop.counted_all:
        return (
            f"every key range was counted (run {stop.run}) but the report was not stored; "
            "`unistatus check --resume` stores its report"
        )
    return "the ranges counted so far are kept; `unistatus check --resume` goes on from there"


def _since(
    engine: sa.Engine, since: str | None, systems: set[LegacySystemType]
) -> datetime | str | None:
    """``--since`` as a time. Only ``phase-start`` needs the phases module, which loads
    the gates, the backfill, the adapter and Alembic (half a second of start-up): an ISO
    time or an age is parsed without it."""
    from unistatus.migration.check import parse_since

    try:
        # Refused here, before anything starts, if it is neither; a time in the future
        # is judged by run_check on the database's clock (this host's may be behind).
        parse_since(since, judge_future=False)
        return since  # an age is counted back from the database's clock (run_check)
    except InputError:
        from unistatus.migration.phases import resolve_since

        return resolve_since(engine, since, systems)  # phase-start, or the same error again


def _print(data: dict[str, Any]) -> None:
    from rich.markup import escape
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
    if not data["complete"]:
        parts = [
            f"{name.lower()} {info['percent']:g}% ({info['total']:,} rows, {info['ranges']:,} "
            "ranges)"
            for name, info in data["per_system"].items()
        ]
        console.print(
            f"[yellow]stopped by --max-duration: not a full check (complete: false); "
            f"{'; '.join(parts)}. `unistatus check --resume` goes on (run {data['run']})[/]"
        )
    _print_verification(data.get("verification"))
    if data.get("unreplayed_note"):
        console.print(f"[yellow]{escape(data['unreplayed_note'])}[/]")
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
        # Stored values (any writer's), quoted: text, never markup.
        line = f"  {ref} ({ex['transaction_id'] or 'no unified row'}): {'; '.join(parts)}"
        console.print(as_markup(line), highlight=False, soft_wrap=True)


def _print_verification(info: dict[str, Any] | None) -> None:
    if not info or info.get("watermark") is None:
        return
    console.print(
        f"continuous verification: every change before {info['watermark']} verified "
        f"(lag {info['lag_seconds']:,.0f} s)"
    )


def register(app: typer.Typer) -> None:
    app.command("check")(check)
