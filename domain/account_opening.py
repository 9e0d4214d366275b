"""Opening an account: its row, created the first time the account is seen, and its
welcome grant, once.

Above both domain/accounts.py and domain/ledger.py: the grant is a ledger entry, and the
ledger's entries reference accounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from domain import ledger
from domain.accounts import Account

#: Ledger key of an account's welcome grant: one per account, ever.
WELCOME_KEY = "welcome:{account_id}"


def ensure_account(
    session: Session,
    account_id: int,
    *,
    login: str | None = None,
    kind: str | None = None,
    now: datetime,
    welcome_credits: Decimal,
) -> tuple[Account, bool]:
    """The account, created if new (with its welcome grant, once); True when it was created.

    Safe when two transactions create the same account at once: one inserts, the other
    waits for it and finds the row. A login or kind given for an existing account updates it
    (GitHub logins change on rename; the id does not).
    """
    values = {"id": account_id, "login": login, "kind": kind, "created_at": now}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    inserted = insert(Account).values(values).on_conflict_do_nothing(index_elements=["id"])
    created = session.execute(inserted.returning(Account.id)).first() is not None
    account = session.execute(
        select(Account).where(Account.id == account_id).execution_options(populate_existing=True)
    ).scalar_one()
    if not created:
        _keep_names(account, login, kind)
        return account, False
    if welcome_credits > 0:
        ledger.credit(
            session,
            account_id,
            welcome_credits,
            key=WELCOME_KEY.format(account_id=account_id),
            reason="welcome grant",
            now=now,
        )
    return account, True


@dataclass(frozen=True)
class Opening:
    """An account an event names: opened if new, its login and kind kept up to date."""

    account_id: int
    login: str | None = None
    kind: str | None = None


def ensure_accounts(
    session: Session, openings: Sequence[Opening], *, now: datetime, welcome_credits: Decimal
) -> set[int]:
    """`ensure_account` for many at once, in a few statements whatever their number: the
    new accounts inserted in one (ascending ids, the lock order), every one read in one,
    the logins and kinds taken in the order given (the last one given stands), and the
    welcome grants of the new ones credited in one. Returns the ids created now."""
    if not openings:
        return set()
    first: dict[int, Opening] = {}
    for opening in openings:
        first.setdefault(opening.account_id, opening)
    # Read first: the accounts an event names almost always exist, and then no insert is
    # sent. Those missing are inserted (one another transaction inserted meanwhile is
    # left as it is) and read.
    accounts = _read_accounts(session, sorted(first))
    created: set[int] = set()
    if len(accounts) < len(first):
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        missing = [account_id for account_id in sorted(first) if account_id not in accounts]
        new = [
            {"id": a, "login": first[a].login, "kind": first[a].kind, "created_at": now}
            for a in missing
        ]
        inserted = insert(Account).values(new).on_conflict_do_nothing(index_elements=["id"])
        created = {account_id for (account_id,) in session.execute(inserted.returning(Account.id))}
        accounts.update(_read_accounts(session, missing))
    for opening in openings:
        if opening.account_id in created and first[opening.account_id] is opening:
            continue  # inserted with this opening's login and kind
        _keep_names(accounts[opening.account_id], opening.login, opening.kind)
    if created and welcome_credits > 0:
        grants = [
            ledger.NewCredit(
                account_id,
                welcome_credits,
                key=WELCOME_KEY.format(account_id=account_id),
                reason="welcome grant",
            )
            for account_id in sorted(created)
        ]
        ledger.credit_many(session, grants, now=now)
    return created


def _read_accounts(session: Session, ids: list[int]) -> dict[int, Account]:
    wanted = select(Account).where(Account.id.in_(ids)).execution_options(populate_existing=True)
    return {account.id: account for account in session.scalars(wanted)}


def _keep_names(account: Account, login: str | None, kind: str | None) -> None:
    """Take a login or kind an event gives (GitHub logins change on rename; the id does not)."""
    if login is not None and account.login != login:
        account.login = login
    if kind is not None and account.kind != kind:
        account.kind = kind
