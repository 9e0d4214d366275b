"""What the billing commands (credits, packs, accounts) share: a unit of work on the
configured database, and the one mapping of billing's errors to CLI messages and exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING

from outbox.cli.common import account_ref, fail, usage_error

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from domain.accounts import Account


@contextmanager
def billing_session() -> Iterator[Session]:
    """One transaction on DATABASE_URL, committed when the command's work succeeds; billing's
    errors come out as CLI failures (exit 1) or usage errors (exit 2), never a traceback."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from domain.accounts import CustomerAlreadyLinked, UnknownAccount
    from domain.credits import InvalidAmount
    from domain.ledger import InsufficientCredits
    from domain.packs import InvalidPack
    from outbox.cli.jobs import command_session

    try:
        with command_session() as session:
            yield session
    except (UnknownAccount, InsufficientCredits, CustomerAlreadyLinked) as exc:
        fail(str(exc))
    except (InvalidAmount, InvalidPack) as exc:
        usage_error(str(exc))
    except (OperationalError, ProgrammingError) as exc:
        if _missing_table(exc):
            fail("the database has no billing tables yet: run `outbox migrate`")
        raise


def _missing_table(exc: Exception) -> bool:
    text = str(exc).lower()
    return (
        "no such table" in text
        or "undefinedtable" in type(getattr(exc, "orig", exc)).__name__.lower()
    )


def account_named(session: Session, ref: str) -> Account:
    """The account ACCOUNT names (its numeric id or its login), else exit 1 saying so."""
    from domain.accounts import find_account

    account = find_account(session, account_ref(ref))
    if account is None:
        fail(f"no account with id or login {ref!r}")
    return account


def credits_argument(text: str) -> Decimal:
    """An amount of credits from the command line, else exit 2 naming what is wrong."""
    from domain.credits import InvalidAmount, parse_credits

    try:
        return parse_credits(text)
    except InvalidAmount as exc:
        usage_error(f"{exc} (write an amount such as 12, -3 or 0.25)")
