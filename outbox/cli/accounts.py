"""`outbox accounts`: the SaaS's accounts and the Stripe customers linked to them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import typer

from outbox.cli.billing_common import account_named, billing_session
from outbox.cli.common import (
    fail,
    friendly_errors,
    get_settings,
    id_argument,
    print_json_lines,
    say,
    usage_error,
)
from outbox.cli.tables import key_column, print_listing, text_column

accounts_app = typer.Typer(
    help="Accounts (GitHub users and organisations) and their Stripe customers.",
    no_args_is_help=True,
    add_completion=False,
)

KINDS = ("User", "Organization")
DEFAULT_KIND = "User"  #: of an account added by hand without --kind


def register(app: typer.Typer) -> None:
    app.add_typer(accounts_app, name="accounts")


@accounts_app.command("list")
@friendly_errors
def list_(
    limit: int = typer.Option(100, min=1, help="At most this many accounts."),
    json_output: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Accounts by id, with their balance and Stripe customer."""
    from domain import balances
    from domain.accounts import list_accounts

    with billing_session() as session:
        rows = [
            {**_account_row(a), "balance": str(balances.balance(session, a.id))}
            for a in list_accounts(session, limit=limit)
        ]
    if not rows:
        fail("no accounts")
    if json_output:
        print_json_lines(rows)
        return
    columns = (
        key_column("id", right=True),
        text_column("login", least=8),
        text_column("kind", least=4),
        text_column("stripe customer", least=10),
        key_column("balance", right=True),
    )
    print_listing(
        columns,
        [
            [str(r["id"]), r["login"], r["kind"], r["stripe_customer_id"], r["balance"]]
            for r in rows
        ],
    )


@accounts_app.command("show")
@friendly_errors
def show(
    account: str = typer.Argument(..., help="The account's numeric GitHub id or its login."),
    json_output: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """One account: its Stripe customer, credits and subscriptions."""
    from datetime import timedelta

    from domain import balances
    from domain.credits import format_credits
    from domain.subscriptions import subscriptions_of
    from outbox.db import utcnow

    grace = timedelta(days=get_settings().past_due_grace_days)
    now = utcnow()
    with billing_session() as session:
        found = account_named(session, account)
        standing = balances.standing(session, found.id)
        subs = [sub.as_dict(now, grace) for sub in subscriptions_of(session, found.id)]
        row: dict[str, Any] = {
            **_account_row(found),
            "balance": str(standing.balance),
            "available": str(standing.available),
            "debt": str(standing.debt),
            "paid_features": any(sub["paid_features"] for sub in subs),
            "subscriptions": subs,
        }
    if json_output:
        print_json_lines([row])
        return
    for name, value in row.items():
        if name in ("balance", "available", "debt"):
            value = format_credits(Decimal(value))
        if name != "subscriptions":
            say(f"{name:<20}{_text(value)}")
    for sub in subs:
        say(
            f"subscription        {sub['subscription']} {sub['status']} price "
            f"{sub['price_id'] or '-'} until {_text(sub['current_period_end'])}"
            + (" (cancels at period end)" if sub["cancel_at_period_end"] else "")
        )


@accounts_app.command("add")
@friendly_errors
def add(
    account_id_text: str = typer.Argument(
        ..., metavar="ACCOUNT_ID", help="The GitHub user or organisation id."
    ),
    login: str = typer.Option(..., help="The GitHub login."),
    kind: str | None = typer.Option(
        None, help="User or Organization [default: User; an existing account keeps its kind]."
    ),
) -> None:
    """Create an account by hand (installations create them too), with its welcome grant.

    For an account that exists already, the login (and the kind, when given) is updated.
    """
    from domain.account_opening import ensure_account
    from domain.accounts import find_account
    from outbox.db import utcnow

    account_id = id_argument(account_id_text, "account id")
    if kind is not None and kind not in KINDS:
        usage_error(f"--kind must be one of {', '.join(KINDS)}")
    welcome = get_settings().welcome_credits
    with billing_session() as session:
        if kind is None and find_account(session, str(account_id)) is None:
            kind = DEFAULT_KIND
        account, created = ensure_account(
            session, account_id, login=login, kind=kind, now=utcnow(), welcome_credits=welcome
        )
        kind_now = account.kind
    if created:
        say(f"added account {account_id} ({login}, {kind_now}) with {welcome} welcome credits")
    else:
        say(f"account {account_id} already exists; login set to {login}, kind {kind_now}")


@accounts_app.command("link")
@friendly_errors
def link(
    account: str = typer.Argument(..., help="The account's numeric GitHub id or its login."),
    customer_id: str = typer.Argument(..., help="The Stripe customer id (cus_…)."),
    replace: bool = typer.Option(False, help="Replace the customer the account has now."),
) -> None:
    """Link a Stripe customer to an account: its subscriptions and payments become the account's."""
    from domain.accounts import link_customer
    from outbox.db import utcnow

    if not customer_id.startswith("cus_"):
        usage_error(f"{customer_id!r} is not a Stripe customer id (cus_…)")
    with billing_session() as session:
        found = account_named(session, account)
        changed = link_customer(session, found.id, customer_id, now=utcnow(), replace=replace)
    if changed:
        say(f"linked Stripe customer {customer_id} to account {found.id}")
    else:
        say(f"Stripe customer {customer_id} was already linked to account {found.id}")


def _account_row(account: Any) -> dict[str, Any]:
    return {
        "id": account.id,
        "login": account.login,
        "kind": account.kind,
        "stripe_customer_id": account.stripe_customer_id,
        "created_at": account.created_at,
    }


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S} UTC"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)
