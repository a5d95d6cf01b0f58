"""`unistatus export prometheus-rules|grafana-dashboard`: files for a team's own stack."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from unistatus.cli.context import abort, err_console, state
from unistatus.cli.whole_file import write_whole

export_app = typer.Typer(
    help=(
        "Write Prometheus alert rules or a Grafana dashboard using the service's metric "
        "names.\n\n"
        "Examples:\n\n"
        "  unistatus export prometheus-rules --out /etc/prometheus/rules/unistatus.yml\n"
        "  unistatus export grafana-dashboard --out unistatus-dashboard.json"
    )
)

OUT_OPTION = typer.Option(
    None, "--out", help="Write to this file instead of stdout.", dir_okay=False
)


def _write(ctx: typer.Context, text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text)
        return
    from unistatus.db.database_files import refuse_database_file

    refuse_database_file(out, _database_url(ctx))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_whole(out, text + "\n")
    except OSError as exc:  # as diagnose --out says it
        abort(f"cannot write {out}: {exc.strerror}")
    err_console.print(f"wrote {out}")


def _database_url(ctx: typer.Context) -> str | None:
    """The configured database's URL, if the settings load (export needs none)."""
    from unistatus.errors import UnistatusError

    try:
        return state(ctx).settings.database_url
    except UnistatusError:
        return None


@export_app.command("prometheus-rules")
def prometheus_rules(
    ctx: typer.Context,
    out: Path | None = OUT_OPTION,
) -> None:
    """Prometheus alert rules (YAML) with the spec's critical/warning thresholds.

    Examples:

      unistatus export prometheus-rules
      unistatus export prometheus-rules --out /etc/prometheus/rules/unistatus.yml
    """
    from unistatus.observe.exports import prometheus_rules as rules
    from unistatus.observe.exports import to_yaml

    _write(ctx, to_yaml(rules()), out)


@export_app.command("grafana-dashboard")
def grafana_dashboard(
    ctx: typer.Context,
    out: Path | None = OUT_OPTION,
) -> None:
    """A Grafana dashboard (JSON model) of the migration.

    Examples:

      unistatus export grafana-dashboard --out unistatus-dashboard.json
      unistatus export grafana-dashboard | jq .title
    """
    from unistatus.observe.exports import grafana_dashboard as dashboard

    _write(ctx, json.dumps(dashboard(), indent=2), out)


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
