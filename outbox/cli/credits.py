"""`outbox credits`: an account's balance and ledger, and operators' adjustments."""

from __future__ import annotations

import uuid
from typing import Any

import typer

from outbox.cli.billing_common import account_named, billing_session, credits_argument
from outbox.cli.common import fail, friendly_errors, print_json_lines, say, usage_error
from outbox.cli.tables import key_column, note_column, print_listing, text_column

credits_app = typer.Typer(
    help="Credit balances and the credit ledger.", no_args_is_help=True, add_completion=False
)

#: Ledger keys of operators' adjustments start with this (the rest is unique per adjustment).
ADJUST_KEY_PREFIX = "adjust:"


def register(app: typer.Typer) -> None:
    app.add_typer(credits_app, name="credits")


@credits_app.command("show")
@friendly_errors
def show(
    account: str = typer.Argument(..., help="The account's numeric GitHub id or its login."),
    json_output: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """The account's balance, what open holds reserve, what it may spend, and any debt."""
    from domain import balances

    with billing_session() as session:
        found = account_named(session, account)
        now = balances.standing(session, found.id)
    row = {
        "account_id": found.id,
        "login": found.login,
        "balance": str(now.balance),
        "held": str(now.held),
        "available": str(now.available),
        "debt": str(now.debt),
    }
    if json_output:
        print_json_lines([row])
        return
    for name, value in row.items():
        say(f"{name:<11}{_plain(value)}")


@credits_app.command("history")
@friendly_errors
def history(
    account: str = typer.Argument(..., help="The account's numeric GitHub id or its login."),
    limit: int = typer.Option(100, min=1, help="Show the last N entries."),
    json_output: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """The account's ledger entries, oldest first."""
    from domain import balances

    with billing_session() as session:
        found = account_named(session, account)
        rows = [_entry_row(entry) for entry in balances.history(session, found.id, limit=limit)]
    if json_output:
        print_json_lines(rows)
        return
    if not rows:
        say(f"account {found.id} has no ledger entries")
        return
    columns = (
        key_column("id", right=True),
        text_column("time", least=10),
        key_column("amount", right=True),
        key_column("debt", right=True),
        note_column("reason"),
        text_column("key", least=12),
        key_column("event", right=True),
        key_column("job", right=True),
    )
    print_listing(
        columns,
        [
            [str(r["id"]), f"{r['created_at']:%Y-%m-%d %H:%M:%S}", _plain(r["amount"]),
             _plain(r["debt_change"]), r["reason"], r["key"], _blank(r["event_id"]),
             _blank(r["job_id"])]
            for r in rows
        ],
    )  # fmt: skip


@credits_app.command(
    "adjust", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True}
)
@friendly_errors
def adjust(
    account: str = typer.Argument(..., help="The account's numeric GitHub id or its login."),
    amount: str = typer.Argument(..., help="Credits to add (12, 0.5) or take (-3)."),
    reason: str = typer.Option(..., "--reason", help="Why, for the ledger (required)."),
    key: str | None = typer.Option(
        None, help="Idempotency key: the same key is applied once (default: a new one)."
    ),
) -> None:
    """An operator's ledger entry; refused if it would leave less than zero available.

    The same --key again with the same account and amount is a no-op (exit 0); with another
    account or amount it is refused (exit 1), naming the first use.
    """
    from domain import balances, ledger
    from outbox.db import utcnow

    credits = credits_argument(amount)
    if not reason.strip():
        usage_error("--reason must say why")
    entry_key = ADJUST_KEY_PREFIX + (key or uuid.uuid4().hex)
    with billing_session() as session:
        found = account_named(session, account)
        try:
            entry = ledger.adjust(
                session, found.id, credits, key=entry_key, reason=f"operator: {reason.strip()}",
                now=utcnow(),
            )  # fmt: skip
        except ledger.KeyReused as reused:
            fail(str(reused))
        balance = balances.balance(session, found.id)
    if entry is None:
        say(f"adjustment {entry_key} was already applied; balance {_plain(balance)}")
        return
    paid = f", {_plain(-entry.debt_change)} of it paid debt" if entry.debt_change else ""
    say(
        f"account {found.id}: {_signed(credits)} credits{paid} ({entry_key}); "
        f"balance {_plain(balance)}"
    )


def _entry_row(entry: Any) -> dict[str, Any]:
    return {
        "id": entry.id,
        "account_id": entry.account_id,
        "created_at": entry.created_at,
        "amount": str(entry.amount),
        "debt_change": str(entry.debt_change),
        "reason": entry.reason,
        "key": entry.key,
        "event_id": entry.event_id,
        "job_id": entry.job_id,
    }


def _plain(value: Any) -> str:
    from decimal import Decimal, InvalidOperation

    from domain.credits import format_credits

    try:
        return format_credits(Decimal(str(value)))
    except InvalidOperation:
        return "" if value is None else str(value)


def _blank(value: Any) -> str:
    return "" if value is None else str(value)


def _signed(amount: Any) -> str:
    text = _plain(amount)
    return text if text.startswith("-") else f"+{text}"
