"""A claimed row on its way through a batch (Step), how it may end (Outcome), and the steps
taken outside any transaction: decoding the row and running its handler's `prepare`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from outbox.claiming import ClaimedEvent
from outbox.db import utcnow
from outbox.dispatch import find_handler, unhandled
from outbox.handling import EventContext, Handler, PermanentFailure
from outbox.models import Source
from outbox.modes import mode_mismatch
from outbox.payload import UnreadablePayload, decode_body
from processors import traces
from processors.runtime import Runtime

#: A row's handler starts only while at least this share of its claim's lease is left, so
#: what it reads (a Stripe read may take 30 s, API_TIMEOUT) and the commit fit in the lease.
LEASE_SHARE_TO_START = 0.5


class Outcome(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    RETRY = "retry"
    DEAD = "dead"
    #: The lease ran out and someone else may own the row now: nothing was applied.
    LEASE_LOST = "lease_lost"
    #: Given back before its handler started (the lease was half gone), attempt refunded.
    RELEASED = "released"
    #: The failure itself could not be written (database down); the lease runs out instead.
    UNRECORDED = "unrecorded"


@dataclass(frozen=True)
class Skip:
    """A row never to apply, and why (a Stripe event of the mode not applied here)."""

    reason: str


@dataclass(eq=False)  # a step is itself: list lookups compare identity, not every field
class Step:
    """One claimed row on its way through a batch: what applies it, and how it ended."""

    event: ClaimedEvent
    started: float
    handler: Handler | None = None
    context: EventContext | None = None
    prepared: Any = None
    #: Why the row is skipped (no handler, the other Stripe mode): never applied.
    skip_reason: str | None = None
    #: Reading the row or `prepare` failed: nothing to apply, the failure is recorded.
    prepare_error: BaseException | None = None
    #: `apply` failed in this round's transaction (its savepoint was rolled back).
    apply_error: BaseException | None = None
    #: The accounts its apply writes, once read (a row carried on or tried again keeps them).
    accounts: tuple[int, ...] | None = None
    #: Applied on its own, in a transaction of its own (no `apply_many`, or it declined).
    alone: bool = False
    #: Not started: given back with its attempt refunded (no time left, or it waits its turn).
    unrun: bool = False
    #: Not started because another batch holds its account: carried on to the pass's next
    #: batch, or given back, due shortly.
    busy: bool = False
    #: Carried on to the pass's next batch (its accounts were busy), `busy_rounds` times so far.
    carried: bool = False
    busy_rounds: int = 0
    #: Why its handler changed nothing (NoEffect), kept on the `done` row.
    note: str | None = None
    outcome: Outcome | None = None

    @property
    def error(self) -> BaseException | None:
        return self.prepare_error or self.apply_error

    def try_again(self) -> None:
        """Forget how this round's transaction went (it was rolled back): applied again,
        its accounts asked for again."""
        self.apply_error = None
        self.note = None
        self.alone = False
        if self.busy:
            self.unrun = self.busy = self.carried = False


def time_to_start(runtime: Runtime, event: ClaimedEvent) -> bool:
    """Whether enough of the row's lease is left to start its handler (LEASE_SHARE_TO_START)."""
    share = timedelta(seconds=runtime.settings.lease_seconds * LEASE_SHARE_TO_START)
    return utcnow() < event.lease_expires_at - share


def prepare(runtime: Runtime, step: Step, now: datetime) -> None:
    """Decode the row, find its handler and run its `prepare`, outside any transaction."""
    event = step.event
    try:
        context = event_context(runtime, event, now)
        if isinstance(context, Skip):
            step.skip_reason = context.reason
            return
        handler = find_handler(runtime.handlers, event.source, event.event_type)
        if handler is None:
            step.skip_reason = unhandled(event.source, event.event_type)
            return
        step.handler, step.context = handler, context
        if handler.prepare is not None:
            with traces.event_step(event, "prepare"):
                step.prepared = handler.prepare(context)
    except Exception as exc:  # PermanentFailure, a network error: recorded with the batch
        step.prepare_error = exc


def event_context(runtime: Runtime, event: ClaimedEvent, now: datetime) -> EventContext | Skip:
    """The handler's view of the row, or Skip when it is never to be applied
    (PermanentFailure for a row that can never be read: its body purged or unreadable)."""
    if event.raw_body is None:
        raise PermanentFailure("the body was purged")
    try:
        payload = decode_body(event.raw_body, event.headers.get("content-type"))
    except UnreadablePayload as exc:
        raise PermanentFailure(f"unprocessable: {exc}") from exc
    if event.source == Source.STRIPE:
        reason = mode_mismatch(event.livemode, runtime.settings.stripe_mode)
        if reason is not None:
            return Skip(reason)
    return EventContext(
        id=event.id,
        source=event.source,
        delivery_id=event.delivery_id,
        event_type=event.event_type,
        payload=payload,
        livemode=event.livemode,
        provider_created_at=event.provider_created_at,
        installation_id=event.installation_id,
        stripe_account=event.stripe_account,
        account_id=event.account_id,
        attempts=event.attempts,
        backfilled=event.backfilled,
        now=now,
    )
