"""`unistatus diagnose [--out FILE]`: one JSON file for a rollback's investigation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from unistatus.cli.context import _default, abort, console, err_console, state
from unistatus.cli.whole_file import write_whole


def diagnose(
    ctx: typer.Context,
    out: str = typer.Option(
        None, "--out", help="Where to write (default: rollback_<UTC time>.json here); - for stdout."
    ),
) -> None:
    """Versions, config (secrets redacted), mode/phase history, gates, checks, alerts, ...

    One JSON file to attach to a rollback's investigation.

    Examples:

      unistatus diagnose
      unistatus diagnose --out /tmp/incident-42.json
      unistatus diagnose --out - | jq .control.mode
    """
    from unistatus.db.database_files import refuse_database_file
    from unistatus.observe.diagnose import default_filename, generate_diagnostic

    app_state = state(ctx)
    # A database without unistatus's tables is a finding to report, not a refusal.
    engine = app_state.open_engine("reachable")
    report = generate_diagnostic(engine, app_state.settings)
    text = json.dumps(report, default=_default, indent=2) + "\n"
    versions = report.get("versions") or {}
    finding = versions.get("schema_finding") if isinstance(versions, dict) else None
    if finding:  # what every other command refuses the database for: said, not only filed
        err_console.print(f"[yellow]finding:[/] {escape(finding)}", highlight=False)
    failed = [k for k, v in report.items() if isinstance(v, dict) and set(v) == {"error"}]
    held = _lock_finding(report, failed)
    if held:  # on stderr: with --out - too
        err_console.print(f"[yellow]finding:[/] {escape(held)}", highlight=False, soft_wrap=True)
    if out == "-":
        typer.echo(text, nl=False)
        return
    path = Path(out) if out else Path(default_filename())
    refuse_database_file(path, app_state.settings.database_url)
    try:
        write_whole(path, text)
    except OSError as exc:
        abort(f"cannot write {path}: {exc.strerror}")
    console.print(f"diagnostic written to [bold]{path}[/] ({len(text)} bytes)")
    if failed:
        console.print(f"[yellow]sections that could not be collected:[/] {', '.join(failed)}")


def _lock_finding(report: dict[str, Any], failed: list[str]) -> str | None:
    """The sections kept waiting for a lock, and who holds it (``table_locks``)."""
    from unistatus.db.lock_timeouts import lock_timeout_of  # lazy: SQLAlchemy
    from unistatus.errors import TableLockBusyError

    waited = [k for k in failed if lock_timeout_of(str(report[k]["error"]))]
    holders = report.get("table_locks")
    if not waited or not isinstance(holders, list) or not holders:
        return None
    return (
        f"{', '.join(waited)} waited for a lock held by {TableLockBusyError.describe(holders)}: "
        "end that transaction or wait for it to end, then run `unistatus diagnose` again"
    )


def register(app: typer.Typer) -> None:
    app.command("diagnose")(diagnose)
