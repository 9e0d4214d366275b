"""The contract between the processors and the domain: what a handler gets and may say back.

A handler applies one kind of event. The processors call `prepare` (if any) outside any
transaction, then `apply` inside the transaction that also marks the event done, so the
event's database effects and its `done` commit together or not at all.

That transaction is a batch's: many events apply in it, each handler's set-based
`apply_many` for its events (which reports each event's failure rather than raising, so
needs no savepoint), every other event by itself in a savepoint of its own (one that
fails rolls back only itself). Before applying anything, the batch locks every
account its events will write (`accounts`, `lock_accounts`), in one statement, in
ascending id order, skipping the accounts another batch holds: the events of those are
tried again in the worker's next batch, and after a few tries go back to the queue unrun
(their attempt refunded), due again shortly, so a batch never waits for another's
accounts, and two batches never deadlock. A handler
takes no other lock that another batch may hold, except on its event's own object, which
no other batch has claimed meanwhile.

The session a handler is given is SQLAlchemy's, in that transaction. What a handler runs
on it beyond SQLAlchemy's own (named statements taking a list as one parameter, a batch's
rows of a table written in one statement) is outbox/session.py's, with the base and the
column types of the domain's tables: of `outbox/`, a handler needs only that, this
contract (which also gives it `as_int64` and `as_time` to read an untrusted payload's
numbers and times, and the `RetryPolicy` its own retried work follows) and the settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

# Part of the contract, kept in modules of their own: how a handler reads a number or a
# time out of an untrusted payload, and the retry policy the settings give its own work
# (jobs, usage reports), the one events follow.
from outbox.fields import as_int64 as as_int64
from outbox.fields import as_time as as_time
from outbox.retry import RetryPolicy as RetryPolicy


@dataclass(frozen=True)
class EventContext:
    """One claimed event, decoded, as a handler sees it."""

    id: int
    source: str
    delivery_id: str
    event_type: str
    payload: dict[str, Any]
    livemode: bool | None
    provider_created_at: datetime | None
    installation_id: int | None
    stripe_account: str | None
    account_id: int | None
    attempts: int
    backfilled: bool
    #: The time of this attempt; handlers use it instead of reading the clock.
    now: datetime


class PermanentFailure(Exception):
    """This event can never be applied (malformed for its type, unknown pack): dead at once."""


@dataclass(frozen=True)
class NoEffect:
    """Returned (never raised) by `apply` for an event it looked at and left alone (an
    unpaid checkout, a one-off invoice): the reason is kept on the `done` row, so that
    `outbox events show` can say why it changed nothing."""

    reason: str


@dataclass(frozen=True)
class LeftToApply:
    """`apply_many`'s result for an event it leaves to `apply`, which the processors then
    run by itself, in a savepoint of the batch's transaction (an unusual shape of event
    that the set-based path does not cover)."""


@dataclass(frozen=True)
class Failed:
    """`apply_many`'s result for an event that could not apply: `error` is what stopped
    it (RetryLater, PermanentFailure, ...), recorded as `apply` raising it would be. The
    event wrote nothing."""

    error: BaseException


def apply_one(
    apply_many: Callable[
        [Session, Sequence[tuple[EventContext, Any]]], Sequence[Failed | NoEffect | None]
    ],
    session: Session,
    event: EventContext,
    prepared: Any,
) -> NoEffect | None:
    """`apply` for a handler whose `apply_many` covers every event it is given: the event
    as a batch of one, its failure raised as `apply` raises it."""
    (result,) = apply_many(session, [(event, prepared)])
    if isinstance(result, Failed):
        raise result.error
    return result


class RetryLater(Exception):
    """Not possible yet (the account it names does not exist yet): try again per the policy."""


Apply = Callable[[Session, EventContext, Any], NoEffect | None]
Prepare = Callable[[EventContext], Any]
#: What `apply_many` says of one event: None when it was applied; NoEffect when it was
#: looked at and left alone; LeftToApply when it is left to `apply`, run by itself;
#: Failed when it could not apply (it wrote nothing then).
ManyResult = Failed | NoEffect | LeftToApply | None
#: `apply_many(session, [(event, prepared), ...])` -> one ManyResult per event, in order.
ApplyMany = Callable[[Session, Sequence[tuple[EventContext, Any]]], Sequence[ManyResult]]
#: `accounts(session, event, prepared)` -> the accounts whose rows applying the event may
#: lock or write, found by reads that lock nothing.
AccountsOf = Callable[[Session, EventContext, Any], Iterable[int]]
#: `accounts_many(session, [(event, prepared), ...])` -> the accounts of each event, in
#: order, as `accounts` gives them, for a batch's events of one handler in one read.
AccountsOfMany = Callable[[Session, Sequence[tuple[EventContext, Any]]], Sequence[Iterable[int]]]
#: `lock_accounts(session, ids)`: lock the rows of these accounts that no other transaction
#: holds, in one go, in ascending id order, without waiting; the ids another one holds.
LockAccounts = Callable[[Session, Iterable[int]], set[int]]


@dataclass(frozen=True)
class Handler:
    """How one (source, event type) is applied.

    :param name: for logs and the CLI ("grant_pack", "apply_subscription").
    :param apply: `apply(session, event, prepared)`: database writes only, no network;
        returns NoEffect(reason) when it deliberately changed nothing.
    :param prepare: optional `prepare(event) -> prepared`: network reads (a Stripe object
        fetched fresh), run before the transaction; its result is passed to `apply`.
    :param apply_many: optional set-based `apply` for many events of this kind in one
        transaction (a few statements for the lot instead of a few per event). It must
        give the same effects as `apply` on each event in turn; if it raises, the
        processors roll it back and use `apply` on each event instead.
    :param accounts: optional; the accounts an event's apply locks or writes (default: the
        event's own `account_id`, when it has one), read without locking.
    :param accounts_many: optional; `accounts` for a batch's events of this handler at
        once (one read for the lot instead of one per event); the same answer per event.
    :param lock_accounts: how those accounts are locked, before anything of the batch
        is applied (LockAccounts); None when applying the handler's events locks no
        account.
    """

    name: str
    apply: Apply
    prepare: Prepare | None = None
    apply_many: ApplyMany | None = None
    accounts: AccountsOf | None = None
    accounts_many: AccountsOfMany | None = None
    lock_accounts: LockAccounts | None = None


#: The dispatch table's shape: (source, event type) -> handler.
HandlerTable = dict[tuple[str, str], Handler]


def describe(exc: BaseException) -> str:
    """An error on one line: its class, then its message's first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
