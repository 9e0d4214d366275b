"""The per-row fallback of a batch, and recording failures: a row applied in a transaction
of its own (no set-based path took it, or it lost a lock conflict in the batch), the
interrupted row applied last and alone, and failed attempts put through the retry policy."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from outbox import finishing
from outbox.db import transaction, utcnow
from outbox.handling import NoEffect, PermanentFailure, describe
from outbox.models import Status
from processors import traces
from processors.runtime import Runtime
from processors.steps import Outcome, Step, prepare, time_to_start

log = logging.getLogger("outbox.processors")

#: Characters of an error kept on the row (the failure log keeps its own copy).
ERROR_CAP = 2000


class LeaseLost(Exception):
    def __init__(self, ids: set[int]) -> None:
        super().__init__(f"lease lost on rows {sorted(ids)}")
        self.ids = ids


def commit_alone(runtime: Runtime, sessions: Callable[[], Session], step: Step) -> None:
    """Apply one row in a transaction of its own, then record how it ended."""
    assert step.handler is not None and step.context is not None
    try:
        with transaction(sessions) as session:
            with traces.event_step(step.event, "apply"):
                applied = step.handler.apply(session, step.context, step.prepared)
            note = applied.reason if isinstance(applied, NoEffect) else None
            if not finishing.mark_done(session, step.event, utcnow(), note=note):
                raise LeaseLost({step.event.id})  # rolls the row's effects back
        step.outcome = Outcome.DONE
        return
    except LeaseLost:
        step.outcome = Outcome.LEASE_LOST
        return
    except Exception as exc:  # RetryLater, PermanentFailure, a bug, a deadlock: recorded
        step.apply_error = exc
    try:
        with transaction(sessions) as session:
            record_failures(runtime, session, [step], utcnow())
    except SQLAlchemyError as exc:
        log.error(
            "could not record a failed attempt; the row's lease will run out and it comes back",
            extra={"event_id": step.event.id, "error": describe(exc)[:300]},
        )
        step.outcome = Outcome.UNRECORDED


def apply_last_alone(
    runtime: Runtime, sessions: Callable[[], Session], step: Step, now: datetime
) -> None:
    """An interrupted row, once every other row of its claim is finished: prepared and
    applied alone (or given back unrun when too little of the lease is left)."""
    try:
        if not time_to_start(runtime, step.event):
            with transaction(sessions) as session:
                given_back = finishing.give_back_unrun(session, [step.event], utcnow())
            step.outcome = Outcome.RELEASED if given_back else Outcome.LEASE_LOST
            return
        prepare(runtime, step, now)
        if step.skip_reason is not None:
            with transaction(sessions) as session:
                skipped = finishing.mark_skipped(session, step.event, step.skip_reason, utcnow())
            step.outcome = Outcome.SKIPPED if skipped else Outcome.LEASE_LOST
            return
        if step.error is not None:
            with transaction(sessions) as session:
                record_failures(runtime, session, [step], utcnow())
            return
    except SQLAlchemyError as exc:
        log.error(
            "could not finish an interrupted row; its lease will run out and it comes back",
            extra={"event_id": step.event.id, "error": describe(exc)[:300]},
        )
        step.outcome = Outcome.UNRECORDED
        return
    commit_alone(runtime, sessions, step)


def record_failures(
    runtime: Runtime, session: Session, steps: Sequence[Step], now: datetime
) -> None:
    """Each failed row back to pending after the policy's delay, or dead (PermanentFailure,
    or no tries left), in two statements for them all; its outcome set on the step."""
    failures = []
    for step in steps:
        exc = step.error
        assert exc is not None
        permanent = isinstance(exc, PermanentFailure)
        text = f"permanent: {describe(exc)}" if permanent else describe(exc)
        failures.append(finishing.Failure(step.event, text[:ERROR_CAP], permanent))
    statuses = finishing.fail_many(session, failures, policy=runtime.policy, now=now)
    for step in steps:
        status = statuses.get(step.event.id)
        if status is None:
            step.outcome = Outcome.LEASE_LOST
        else:
            step.outcome = Outcome.DEAD if status == Status.DEAD else Outcome.RETRY
