"""Applying claimed events: the one path from an outbox row to its effects and its end state.

For each row this worker claimed:
1. decode the stored bytes, check the Stripe mode again, find the handler
   (none, or the wrong mode: `skipped`, never applied);
2. run the handler's `prepare` outside any transaction (network reads);
3. run `apply` and `mark_done` in ONE transaction, so the effects and `done` commit
   together; if the lease is no longer ours, roll back and apply nothing;
4. a failure goes through `store.fail` and the retry policy: `PermanentFailure` is dead at
   once, anything else is tried again later, and dead after the last attempt.

Nothing here commits a row it does not own: every finishing statement is guarded by the lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from enum import StrEnum

from sqlalchemy.exc import SQLAlchemyError

from outbox import store
from outbox.db import transaction, utcnow
from outbox.handling import EventContext, Handler, PermanentFailure
from outbox.models import Source, Status
from outbox.modes import mode_mismatch
from outbox.payload import UnreadablePayload, decode_body
from outbox.store import ClaimedEvent
from processors.dispatch import find_handler
from processors.metrics import EVENT_SECONDS, EVENTS_PROCESSED
from processors.runtime import Runtime

log = logging.getLogger("outbox.processors")

#: Due rows a pass claims at most besides the ones its message named, so a backlog drains
#: even when rings were lost, and the next event of an object follows the one just finished.
EXTRA_DUE_PER_PASS = 5
#: Characters of an error kept on the row (the failure log keeps its own copy).
ERROR_CAP = 2000


class Outcome(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    RETRY = "retry"
    DEAD = "dead"
    #: The lease ran out and someone else may own the row now: nothing was applied.
    LEASE_LOST = "lease_lost"
    #: The failure itself could not be written (database down); the lease runs out instead.
    UNRECORDED = "unrecorded"


class _LeaseLost(Exception):
    pass


def process_pass(runtime: Runtime, ids: Sequence[int]) -> dict[Outcome, int]:
    """Claim the named rows that are due, plus a few more due rows, and apply each one.

    Returns how many rows ended each way. A database that cannot be reached ends the pass
    quietly: the rows are still pending (or their lease runs out), and the sweeper rings again.
    """
    counts: dict[Outcome, int] = {}
    runtime.handlers  # noqa: B018  (a table that cannot be built fails the pass, not the rows)
    try:
        if ids:
            _apply_all(runtime, _claim(runtime, ids=list(ids), limit=len(ids)), counts)
        budget = EXTRA_DUE_PER_PASS
        while budget > 0:
            extra = _claim(runtime, ids=None, limit=budget)
            if not extra:
                break
            budget -= len(extra)
            _apply_all(runtime, extra, counts)
    except SQLAlchemyError as exc:
        log.warning(
            "database unavailable; the sweeper will ring these rows again",
            extra={"error": _describe(exc)[:300], "asked": len(ids)},
        )
    return counts


def _claim(runtime: Runtime, *, ids: list[int] | None, limit: int) -> list[ClaimedEvent]:
    with transaction(runtime.sessions) as session:
        return store.claim(
            session,
            now=utcnow(),
            lease=timedelta(seconds=runtime.settings.lease_seconds),
            limit=limit,
            ids=ids,
        )


def _apply_all(runtime: Runtime, claimed: list[ClaimedEvent], counts: dict[Outcome, int]) -> None:
    for event in claimed:
        outcome = process_claimed(runtime, event)
        counts[outcome] = counts.get(outcome, 0) + 1


def process_claimed(runtime: Runtime, event: ClaimedEvent) -> Outcome:
    """Take one claimed row to its next state; never raises for the handler's sake."""
    started = time.perf_counter()
    handler: Handler | None = None
    try:
        context_or_reason = _context(runtime, event)
        if isinstance(context_or_reason, str):
            outcome = _skip(runtime, event, context_or_reason)
            return _logged(event, outcome, started, reason=context_or_reason)
        context = context_or_reason
        handler = find_handler(runtime.handlers, event.source, event.event_type)
        if handler is None:
            reason = f"no handler for {event.source} {event.event_type}"
            return _logged(event, _skip(runtime, event, reason), started, reason=reason)
        _apply(runtime, event, handler, context)
        return _logged(event, Outcome.DONE, started, handler=handler.name)
    except _LeaseLost:
        return _logged(event, Outcome.LEASE_LOST, started, handler=_name(handler))
    except PermanentFailure as exc:
        outcome = _fail(runtime, event, f"permanent: {_describe(exc)}", permanent=True)
        return _logged(event, outcome, started, handler=_name(handler), error=_describe(exc))
    except Exception as exc:  # RetryLater, a bug, a network error: the policy decides
        outcome = _fail(runtime, event, _describe(exc), permanent=False)
        return _logged(event, outcome, started, handler=_name(handler), error=_describe(exc))


def _context(runtime: Runtime, event: ClaimedEvent) -> EventContext | str:
    """The handler's view of the row, or the reason it must be skipped."""
    if event.raw_body is None:
        raise PermanentFailure("the body was purged")
    try:
        payload = decode_body(event.raw_body, event.headers.get("content-type"))
    except UnreadablePayload as exc:
        raise PermanentFailure(f"unprocessable: {exc}") from exc
    if event.source == Source.STRIPE:
        reason = mode_mismatch(event.livemode, runtime.settings.stripe_mode)
        if reason is not None:
            return reason
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
        now=utcnow(),
    )


def _apply(runtime: Runtime, event: ClaimedEvent, handler: Handler, context: EventContext) -> None:
    prepared = handler.prepare(context) if handler.prepare is not None else None
    with transaction(runtime.sessions) as session:
        handler.apply(session, context, prepared)
        if not store.mark_done(session, event, utcnow()):
            raise _LeaseLost  # rolls the handler's writes back with the transaction


def _skip(runtime: Runtime, event: ClaimedEvent, reason: str) -> Outcome:
    with transaction(runtime.sessions) as session:
        finished = store.mark_skipped(session, event, reason, utcnow())
    return Outcome.SKIPPED if finished else Outcome.LEASE_LOST


def _fail(runtime: Runtime, event: ClaimedEvent, error: str, *, permanent: bool) -> Outcome:
    try:
        with transaction(runtime.sessions) as session:
            status = store.fail(
                session,
                event,
                error[:ERROR_CAP],
                policy=runtime.policy,
                now=utcnow(),
                permanent=permanent,
            )
    except SQLAlchemyError as exc:
        log.error(
            "could not record a failed attempt; the row's lease will run out and it comes back",
            extra={"event_id": event.id, "error": _describe(exc)[:300]},
        )
        return Outcome.UNRECORDED
    if status is None:
        return Outcome.LEASE_LOST
    return Outcome.DEAD if status == Status.DEAD else Outcome.RETRY


def _logged(
    event: ClaimedEvent,
    outcome: Outcome,
    started: float,
    *,
    handler: str | None = None,
    reason: str | None = None,
    error: str | None = None,
) -> Outcome:
    elapsed = time.perf_counter() - started
    EVENTS_PROCESSED.labels(event.source, outcome.value).inc()
    EVENT_SECONDS.labels(event.source).observe(elapsed)
    level = logging.INFO if outcome in (Outcome.DONE, Outcome.SKIPPED) else logging.WARNING
    if log.isEnabledFor(level):
        fields = {
            "event_id": event.id,
            "source": event.source,
            "delivery_id": event.delivery_id,
            "event_type": event.event_type,
            "attempt": event.attempts,
            "outcome": outcome.value,
            "ms": round(elapsed * 1000, 2),
        }
        for key, value in (("handler", handler), ("reason", reason), ("error", error)):
            if value is not None:
                fields[key] = value[:500]
        log.log(level, "event %s", outcome.value, extra=fields)
    return outcome


def _name(handler: Handler | None) -> str | None:
    return handler.name if handler is not None else None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
