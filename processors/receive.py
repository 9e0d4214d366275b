"""One stored event applied now, in this process, by its handlers: `outbox receive`.

The same steps and guarantees as a worker's pass (processors/apply.py), for one row and
no other: claim it under a lease, decode it and check the Stripe mode, run the handlers'
`prepare` outside any transaction, then their `apply` in the transaction that marks it
done; a failure is recorded as a worker records it (`PermanentFailure` dead at once,
anything else back to pending per the retry policy). Unlike a pass, it says what
happened to the row: the handler, the outcome and its note or error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from outbox import claiming, finishing
from outbox.claiming import ClaimedEvent
from outbox.db import transaction, utcnow
from outbox.dispatch import find_handler, unhandled
from outbox.handling import NoEffect, PermanentFailure, describe
from outbox.models import Status
from processors.alone import ERROR_CAP
from processors.runtime import Runtime
from processors.steps import Skip, event_context


@dataclass(frozen=True)
class Received:
    """How one event ended: `done`, `skipped`, `pending` (to be retried), `dead`, or
    `not due` (someone else holds it, or it is not pending)."""

    event_id: int
    outcome: str
    handler: str | None = None
    #: The handler's NoEffect reason, why it was skipped, or the error.
    note: str | None = None


def apply_now(runtime: Runtime, event_id: int) -> Received:
    """Claim `event_id` alone and apply it with its handlers."""
    lease = timedelta(seconds=runtime.settings.lease_seconds)
    with transaction(runtime.sessions) as session:
        claimed = claiming.claim(session, now=utcnow(), lease=lease, limit=1, ids=[event_id])
    if not claimed:
        return Received(event_id, "not due")
    event = claimed[0]
    handler_name = None
    try:
        context = event_context(runtime, event, utcnow())
        if isinstance(context, Skip):
            return _finish_skipped(runtime, event, context.reason)
        handler = find_handler(runtime.handlers, event.source, event.event_type)
        if handler is None:
            return _finish_skipped(runtime, event, unhandled(event.source, event.event_type))
        handler_name = handler.name
        prepared = handler.prepare(context) if handler.prepare is not None else None
        with transaction(runtime.sessions) as session:
            applied = handler.apply(session, context, prepared)
            note = applied.reason if isinstance(applied, NoEffect) else None
            if not finishing.mark_done(session, event, utcnow(), note=note):
                return Received(event_id, "not due", handler_name)  # rolled back: not ours
        return Received(event_id, Status.DONE.value, handler_name, note)
    except Exception as exc:  # RetryLater, PermanentFailure, a bug: recorded as a worker does
        return _finish_failed(runtime, event, handler_name, exc)


def _finish_skipped(runtime: Runtime, event: ClaimedEvent, reason: str) -> Received:
    with transaction(runtime.sessions) as session:
        skipped = finishing.mark_skipped(session, event, reason, utcnow())
    return Received(event.id, Status.SKIPPED.value if skipped else "not due", None, reason)


def _finish_failed(
    runtime: Runtime, event: ClaimedEvent, handler: str | None, exc: Exception
) -> Received:
    permanent = isinstance(exc, PermanentFailure)
    text = f"permanent: {describe(exc)}" if permanent else describe(exc)
    with transaction(runtime.sessions) as session:
        status = finishing.fail(
            session,
            event,
            text[:ERROR_CAP],
            policy=runtime.policy,
            now=utcnow(),
            permanent=permanent,
        )
    return Received(event.id, status.value if status is not None else "not due", handler, text)
