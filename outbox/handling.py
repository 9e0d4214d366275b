"""The contract between the processors and the domain: what a handler gets and may say back.

A handler applies one kind of event. The processors call `prepare` (if any) outside any
transaction, then `apply` inside the transaction that also marks the event done, so the
event's database effects and its `done` commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session


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


class ApplyAlone(Exception):
    """Returned (never raised) by `apply_many` for an event it leaves to `apply`, which the
    processors then run in a transaction of its own (an unusual shape of event, whose
    locks must not be taken inside the batch's transaction)."""


@dataclass(frozen=True)
class NoEffect:
    """Returned (never raised) by `apply` for an event it looked at and left alone (an
    unpaid checkout, a one-off invoice): the reason is kept on the `done` row, so that
    `outbox events show` can say why it changed nothing."""

    reason: str


class RetryLater(Exception):
    """Not possible yet (the account it names does not exist yet): try again per the policy."""


Apply = Callable[[Session, EventContext, Any], NoEffect | None]
Prepare = Callable[[EventContext], Any]
#: `apply_many(session, [(event, prepared), ...])` -> one result per event, in order:
#: None when it was applied; ApplyAlone when it is left to `apply`, in a transaction of
#: its own; else the exception that stopped it (it wrote nothing then).
ApplyMany = Callable[[Session, Sequence[tuple[EventContext, Any]]], Sequence[BaseException | None]]


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
    """

    name: str
    apply: Apply
    prepare: Prepare | None = None
    apply_many: ApplyMany | None = None


#: The dispatch table's shape: (source, event type) -> handler.
HandlerTable = dict[tuple[str, str], Handler]
