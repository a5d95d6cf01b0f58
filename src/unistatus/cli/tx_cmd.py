"""`unistatus tx create|update|show`: operate on one transaction through the adapter.

Every write goes through :class:`unistatus.DualWriteAdapter`, so it follows the current
mode, the transition rules and the audit trail exactly like application writes.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from unistatus.cli.context import (
    EXIT_ERROR,
    console,
    err_console,
    print_json,
    require_reason,
    says_when_interrupted,
    state,
)
from unistatus.redact import redact
from unistatus.shown import as_markup

tx_app = typer.Typer(
    help=(
        "Create, update or inspect one transaction (writes follow the current mode).\n\n"
        "Examples:\n\n"
        "  unistatus tx create --type cashout --user 42 --amount 150.00 --currency USD\n"
        "  (it prints the new transaction's ids: UTX100000000000001 (cashout:1) on a database\n"
        "  without legacy rows; use the ones it printed below)\n"
        '  unistatus tx update cashout:1 OTP_PENDING --reason "user requested OTP"\n'
        "  unistatus tx show cashout:1"
    ),
    no_args_is_help=True,
)

ID_HELP = "A UTX id (UTX100000000000042) or a legacy reference (cashout:42)."


def _adapter(ctx: typer.Context) -> Any:
    from unistatus.adapter.core import DualWriteAdapter

    st = state(ctx)
    return DualWriteAdapter(st.engine, settings=st.settings)


# What a `tx create` or `tx update` stopped by Ctrl-C leaves.
WRITE_INTERRUPTED = (
    "the write may or may not have committed: check with `unistatus tx show` before "
    "running it again (a create repeats safely only with the same --idempotency-key: "
    "without one, a second run makes a second transaction)"
)


def _transaction_type(value: str) -> Any:
    from unistatus.domain.statuses import LegacySystemType, UnifiedTransactionType
    from unistatus.errors import InputError

    key = value.strip().upper().replace("-", "_")
    if key in UnifiedTransactionType.__members__:
        return UnifiedTransactionType[key]
    try:
        return LegacySystemType.parse(key).transaction_type
    except InputError:
        raise InputError(
            f"unknown transaction type {value!r}; expected WALLET_CASHOUT, ESCROW or EXCHANGE "
            "(or cashout, escrow, exchange)"
        ) from None


def _finish(result: Any, json_out: bool, verb: str) -> None:
    """Print a DualWriteResult; a write the database refused exits 2."""
    if json_out:
        print_json(result.as_dict())
    elif result.overall_success:
        ref = (
            f" ({result.legacy_system.value.lower()}:{result.legacy_entity_id})"
            if result.legacy_system and result.legacy_entity_id
            else ""
        )
        status = result.status.value if result.status else "?"
        note = "" if result.changed else " (no change)"
        if result.replayed:
            verb, note = "already created", " (idempotency key seen before: nothing written)"
        console.print(
            f"{verb} [bold]{result.entity_id}[/]{ref}: {status} "
            f"[dim](legacy {as_markup(result.legacy_status)}, mode {result.mode.value})[/]{note}",
            highlight=False,
        )
        if result.has_inconsistency:
            err_console.print(
                f"[yellow]warning:[/] {_said(result.error)} (queued for repair)",
                highlight=False,
                soft_wrap=True,
            )
    if not result.overall_success:
        if not json_out:
            hint = ""
            if result.outcome_unknown:
                hint = (
                    " (it may have been written: check with `unistatus tx show`, or repeat "
                    "the command; a create is safe to repeat with the same --idempotency-key)"
                )
            err_console.print(
                f"[bold red]error:[/] write failed: {_said(result.error)}{hint}",
                highlight=False,
                soft_wrap=True,
            )
        raise typer.Exit(EXIT_ERROR)


def _said(error: str | None) -> str:
    """A result's error as one line of text: the database's first line (the log above
    has the rest: the row it quotes, the SQL), redacted, and escaped: the row can hold
    anything a caller wrote, Rich markup included."""
    lines = (error or "").strip().splitlines()
    return escape(redact(lines[0] if lines else "no detail"))


@tx_app.command(
    "create",
    help=(
        "Create a transaction on the sides the current mode writes.\n\n"
        "With --legacy-id, links an existing legacy row instead (idempotent). --status "
        "takes a unified status (PENDING) or a legacy value of that system "
        "(RATE_LOCKED).\n\n"
        "With --idempotency-key, repeating the command (e.g. after a failure whose outcome "
        "is unknown) returns the transaction the first run created instead of a second "
        "one; the same key with other arguments is refused (exit 2).\n\n"
        "Examples:\n\n"
        "  unistatus tx create --type WALLET_CASHOUT --user 42 --amount 150.00 --currency "
        "USD\n\n"
        "  unistatus tx create --type cashout --user 42 --amount 150.00 --currency USD "
        "--idempotency-key order-1042\n\n"
        "  unistatus tx create --type exchange --user 7 --amount 0.015 --currency BTC "
        "--status RATE_LOCKED --json"
    ),
)
def create(
    ctx: typer.Context,
    ttype: str = typer.Option(
        ..., "--type", help="WALLET_CASHOUT, ESCROW or EXCHANGE (or cashout, escrow, exchange)."
    ),
    user: int = typer.Option(..., "--user", help="User id (positive integer)."),
    amount: str = typer.Option(..., "--amount", help="Exact decimal amount, e.g. 150.00."),
    currency: str = typer.Option(..., "--currency", help="Upper-case code, e.g. USD, USDT."),
    legacy_id: int = typer.Option(None, "--legacy-id", help="Link this existing legacy row."),
    status: str = typer.Option(None, "--status", help="Initial status (default PENDING)."),
    idempotency_key: str = typer.Option(
        None,
        "--idempotency-key",
        help="Make the create repeatable: the same key returns the first result.",
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    with says_when_interrupted(WRITE_INTERRUPTED):
        result = _adapter(ctx).create_transaction(
            _transaction_type(ttype),
            user_id=user,
            amount=amount,
            currency=currency,
            legacy_entity_id=legacy_id,
            status=status,
            metadata={"source": "cli"},
            idempotency_key=idempotency_key,
        )
    _finish(result, json_out, "created")


@tx_app.command(
    "update",
    help=(
        "Change a transaction's status (unified or legacy value), with a reason.\n\n"
        "The change must be allowed by the transition rules; --force makes it an audited "
        "admin override (the reason is recorded in the history). In LEGACY_ONLY only the "
        "legacy row is written: the history is kept from dual write on, so there the "
        "reason, the author and the override are recorded nowhere (a warning says so).\n\n"
        "Examples:\n\n"
        "  (ID is a transaction still in progress, e.g. one `tx create` just made: a final\n"
        "  one, such as the demo data's SUCCESS cashout:1, refuses it without --force)\n"
        '  unistatus tx update cashout:1 OTP_PENDING --reason "user requested OTP"\n\n'
        '  unistatus tx update UTX100000000000042 SUCCESS --reason "ops fix INC-12" --by '
        "alice --force"
    ),
)
def update(
    ctx: typer.Context,
    entity_id: str = typer.Argument(..., metavar="ID", help=ID_HELP),
    new_status: str = typer.Argument(..., metavar="STATUS", help="Unified or legacy status."),
    reason: str = typer.Option(
        ..., "--reason", help="Why (recorded in the history; not in LEGACY_ONLY)."
    ),
    by: str = typer.Option("cli", "--by", help="Who made the change (recorded)."),
    force: bool = typer.Option(False, "--force", help="Admin override of the transition rules."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    reason = require_reason(reason, "tx update")
    with says_when_interrupted(WRITE_INTERRUPTED):
        result = _adapter(ctx).update_status(
            entity_id, new_status, reason=reason, triggered_by=by, force=force
        )
    _finish(result, json_out, "updated")
    from unistatus.domain.statuses import DualWriteMode

    if result.overall_success and result.changed and result.mode is DualWriteMode.LEGACY_ONLY:
        err_console.print(
            "[yellow]warning:[/] LEGACY_ONLY writes the legacy row only: this change's "
            "reason, author and override are not recorded (the history is kept from dual "
            "write on)",
            highlight=False,
            soft_wrap=True,
        )


@tx_app.command(
    "show",
    help=(
        "Show a transaction: its status (and which side it came from), whether both sides "
        "agree, and its most recent history rows.\n\n"
        "Examples:\n\n"
        "  unistatus tx show cashout:1\n\n"
        "  unistatus tx show UTX200000000000007 --json"
    ),
)
def show(
    ctx: typer.Context,
    entity_id: str = typer.Argument(..., metavar="ID", help=ID_HELP),
    limit: int = typer.Option(10, "--history", min=0, help="How many history rows to show."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    from unistatus.errors import EntityNotFoundError, LegacyStatusRetiredError

    adapter = _adapter(ctx)
    status, meta = adapter.get_transaction_status(entity_id)
    if meta.get("source") is None:
        raise EntityNotFoundError(entity_id)
    try:
        consistency = adapter.check_consistency(entity_id)
    except LegacyStatusRetiredError as exc:  # phase 4: nothing to compare with
        consistency = {
            "transaction_id": meta.get("transaction_id"),
            "consistent": None,
            "inconsistencies": [],
            "not_judged": str(exc),
        }
    history = _history(adapter, consistency["transaction_id"], limit)
    data = {
        "entity_id": entity_id,
        "transaction_id": consistency["transaction_id"],
        "status": status.value if status else None,
        "source": meta.get("source"),
        "legacy_status": meta.get("legacy_status"),
        "transaction_type": meta.get("transaction_type"),
        "legacy_system": meta.get("legacy_system"),
        "legacy_id": meta.get("legacy_id"),
        "mode": meta.get("mode"),
        "consistent": consistency["consistent"],
        "inconsistencies": consistency["inconsistencies"],
        **({"not_judged": consistency["not_judged"]} if "not_judged" in consistency else {}),
        "history": history,
    }
    if json_out:
        print_json(data)
        return
    _print_show(data)


def _history(adapter: Any, transaction_id: str, limit: int) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from unistatus.clock import as_utc
    from unistatus.db.tables import status_history as h

    if not limit:
        return []
    query = (
        sa.select(
            h.c.created_at,
            h.c.from_status,
            h.c.to_status,
            h.c.from_legacy_status,
            h.c.to_legacy_status,
            h.c.reason,
            h.c.triggered_by,
            h.c.mode,
            h.c.override,
            h.c.operation_id,
            h.c.meta,
        )
        .where(h.c.transaction_id == transaction_id)
        .order_by(h.c.id.desc())
        .limit(limit)
    )
    with adapter.connection() as conn:
        rows = conn.execute(query).mappings().all()
    # In UTC, as every time shown (psycopg's are in the session's TimeZone). Of the
    # metadata, its flag: what the row's change is marked with (a capture's refusal, a
    # legacy side refused under primary_wins), not the caller's own values.
    return [
        {
            **{k: v for k, v in r.items() if k != "meta"},
            "created_at": as_utc(r["created_at"]),
            "flag": _flag(r["meta"]),
        }
        for r in rows
    ]


def _flag(meta: Any) -> str | None:
    """The flag unistatus set on the row: never a key of the caller's metadata."""
    from unistatus.domain.marks import flag_of

    return flag_of(meta)


def _literal(value: object) -> str:
    """A stored value as text for the terminal: Rich markup escaped, and a value with a
    control character (an escape sequence a raw writer stored, a carriage return) shown
    as its repr, as `check` shows one: it must not recolour or overwrite the line."""
    text = "-" if value is None else str(value)
    return escape(text if text.isprintable() else repr(text))


def _print_show(data: dict[str, Any]) -> None:
    """The transaction as stored: every stored value escaped (a reason, a name or a raw
    legacy value is text, never Rich markup: ``[/]`` in a reason must not break this)."""
    from unistatus.domain.marks import FLAG_LEGACY_REFUSED

    ref = f"{str(data['legacy_system']).lower()}:{data['legacy_id']}" if data["legacy_id"] else "-"
    console.print(
        f"[bold]{_literal(data['transaction_id'])}[/] "
        f"({_literal(data['transaction_type'])}, legacy {_literal(ref)})",
        highlight=False,
    )
    status = _literal(data["status"]) if data["status"] is not None else "- (unmappable)"
    console.print(
        f"status: [bold]{status}[/] from {_literal(data['source'])} "
        f"(legacy value {_literal(data['legacy_status'])}, mode {_literal(data['mode'])})",
        highlight=False,
    )
    if data["consistent"] is None:
        console.print(escape(f"consistency: not judged ({data.get('not_judged')})"))
    elif data["consistent"]:
        console.print("consistency: [green]both sides agree[/]")
    else:
        console.print("consistency: [bold red]INCONSISTENT[/]")
        for i in data["inconsistencies"]:
            detail = ""
            if i.get("field"):
                detail = (
                    f" {i['field']}: legacy={i.get('legacy_value')!r} "
                    f"unified={i.get('unified_value')!r}"
                )
            console.print(escape(f"  {i['kind']}{detail}"), highlight=False)
    if not data["history"]:
        console.print("history: (none)")
        return
    table = Table(title="recent history (newest first)")
    for col in ("when", "from", "to", "legacy", "by", "reason", "mode"):
        table.add_column(col)
    for row in data["history"]:
        legacy = f"{row['from_legacy_status'] or '-'} -> {row['to_legacy_status'] or '-'}"
        reason = (row["reason"] or "") + (" [override]" if row["override"] else "")
        if row["flag"] == FLAG_LEGACY_REFUSED:  # legacy never got the change: say so there
            legacy += " refused (queued for repair)"
        elif row["flag"]:
            reason += f" [{row['flag']}]"
        cells = (
            str(row["created_at"])[:19],
            row["from_status"] or "-",
            row["to_status"] or "-",
            legacy,
            row["triggered_by"],
            reason,
            row["mode"],
        )
        table.add_row(*(_literal(cell) for cell in cells))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(tx_app, name="tx")
