"""Opening an account: its row, created the first time the account is seen, and its
welcome grant, once.

Above both domain/accounts.py and domain/ledger.py: the grant is a ledger entry, and the
ledger's entries reference accounts.
"""

from __future__ import annotations

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
        if login is not None and account.login != login:
            account.login = login
        if kind is not None and account.kind != kind:
            account.kind = kind
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
