"""Accounts: the SaaS's customers, GitHub users or organisations, and their Stripe customer.

An account's id is the numeric id of the GitHub user or organisation that installed the
App (stable across renames); its login is kept for people and the CLI. A Stripe checkout
session or customer names its account with `client_reference_id` or
`metadata.github_account_id`; the link to the Stripe customer is recorded the first time
both are named together, or by an operator (`outbox accounts link`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    exists,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from outbox.handling import as_int64
from outbox.session import Base, UTCDateTime


class UnknownAccount(LookupError):
    """No account has this id, login or Stripe customer."""


class CustomerAlreadyLinked(ValueError):
    """The Stripe customer belongs to another account, or the account to another customer."""


class Account(Base):
    __tablename__ = "accounts"

    #: The GitHub user or organisation id (not generated here).
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    login: Mapped[str | None] = mapped_column(String(255), index=True)
    #: "User" or "Organization", as GitHub says.
    kind: Mapped[str | None] = mapped_column(String(32))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    customer_linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("stripe_customer_id", name="uq_accounts_stripe_customer_id"),
    )


def find_account(session: Session, ref: str) -> Account | None:
    """The account named by `ref`: its numeric id, or its login (case-insensitive, as GitHub)."""
    ref = ref.strip()
    account_id = as_int64(ref)  # ASCII digits within 64 bits; "²" or 2**64 name no id
    if account_id is not None:
        found = session.get(Account, account_id)
        if found is not None:
            return found
    matches = (
        session.execute(select(Account).where(func.lower(Account.login) == ref.lower()).limit(2))
        .scalars()
        .all()
    )
    # Two accounts may carry one login (a rename, then the old name taken): no guessing.
    return matches[0] if len(matches) == 1 else None


def get_account(session: Session, ref: str) -> Account:
    """`find_account`, or UnknownAccount naming what was asked for."""
    account = find_account(session, ref)
    if account is None:
        raise UnknownAccount(f"no account with id or login {ref!r}")
    return account


def account_for_customer(session: Session, stripe_customer_id: str) -> Account | None:
    return session.execute(
        select(Account).where(Account.stripe_customer_id == stripe_customer_id)
    ).scalar_one_or_none()


def link_customer(
    session: Session,
    account_id: int,
    stripe_customer_id: str,
    *,
    now: datetime,
    replace: bool = False,
) -> bool:
    """Record that `stripe_customer_id` pays for `account_id`; False when it already did.

    A customer belongs to one account. An account already linked to another customer keeps
    it unless `replace` (an operator's explicit relink).
    """
    account = session.get(Account, account_id)
    if account is None:
        raise UnknownAccount(f"no account with id {account_id}")
    if account.stripe_customer_id == stripe_customer_id:
        return False
    owner = account_for_customer(session, stripe_customer_id)
    if owner is not None:
        raise CustomerAlreadyLinked(
            f"Stripe customer {stripe_customer_id} is linked to account {owner.id}"
        )
    if account.stripe_customer_id is not None and not replace:
        raise CustomerAlreadyLinked(
            f"account {account_id} is linked to Stripe customer {account.stripe_customer_id}"
        )
    account.stripe_customer_id = stripe_customer_id
    account.customer_linked_at = now
    session.flush()
    return True


def link_customers(
    session: Session,
    links: Iterable[tuple[int, str]],
    *,
    now: datetime,
    held: Mapping[int, str | None] | None = None,
) -> None:
    """`link_customer` for many (account, customer) pairs at once, as if in turn: a pair
    links only an account that has no customer yet to a customer that no account has, and
    of the pairs given, the first for an account or a customer wins. The others are left
    as they are (an operator's link or an earlier one stands). One statement for all.

    `held`: the customer each account is known to have (None: none), where the
    caller holds their locks; a pair of an account known to have one is left out before
    the first pair for a customer is chosen, and when none is left no statement is sent."""
    known = held or {}
    chosen: dict[int, str] = {}
    taken: set[str] = set()
    for account_id, customer in links:
        if known.get(account_id) is not None:
            continue
        if account_id not in chosen and customer not in taken:
            chosen[account_id] = customer
            taken.add(customer)
    if not chosen:
        return
    pairs = sorted(chosen.items())
    if session.get_bind().dialect.name == "postgresql":
        # One statement over two arrays, not one per pair: a batch links its customers in
        # one round trip, whatever its size.
        accounts, customers = zip(*pairs, strict=True)
        session.execute(
            _LINK_ALL_IF_FREE,
            {"accounts": list(accounts), "customers": list(customers), "linked_at": now},
        )
    else:
        session.execute(
            _LINK_IF_FREE, [{"account": a, "customer": c, "linked_at": now} for a, c in pairs]
        )
    for cached in list(session.identity_map.values()):
        if isinstance(cached, Account):
            session.expire(cached)  # read again: the statement went around the session


_accounts: Table = Account.__table__  # type: ignore[assignment]
_other = _accounts.alias("other")
#: Link an account with no customer to a customer no account has. Parameters: account,
#: customer, linked_at.
_LINK_IF_FREE = (
    update(_accounts)
    .where(
        _accounts.c.id == bindparam("account"),
        _accounts.c.stripe_customer_id.is_(None),
        ~exists().where(_other.c.stripe_customer_id == bindparam("customer")),
    )
    .values(stripe_customer_id=bindparam("customer"), customer_linked_at=bindparam("linked_at"))
)


#: _LINK_IF_FREE for every pair of two arrays at once, on Postgres.
_LINK_ALL_IF_FREE = text(
    "UPDATE accounts AS a SET stripe_customer_id = v.customer, customer_linked_at = :linked_at "
    "FROM unnest(CAST(:accounts AS bigint[]), CAST(:customers AS varchar[])) "
    "AS v(account, customer) "
    "WHERE a.id = v.account AND a.stripe_customer_id IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM accounts AS o WHERE o.stripe_customer_id = v.customer)"
).bindparams(bindparam("linked_at", type_=UTCDateTime()))


def list_accounts(session: Session, *, limit: int = 100) -> list[Account]:
    return list(session.execute(select(Account).order_by(Account.id).limit(limit)).scalars())
