"""Applying claimed events: the one path from an outbox row to its effects and its end state.

A pass claims a batch of rows (those its message named first, then other due rows), and
for each row:
1. decode the stored bytes, check the Stripe mode again, find the handler
   (none, or the wrong mode: `skipped`, never applied);
2. run the handler's `prepare` outside any transaction (network reads);
3. apply it so that its effects and `done` commit together, in the batch's one
   transaction: with its handler's set-based `apply_many` beside the other rows of that
   handler, else by itself in a savepoint; the accounts the batch writes are locked first,
   in id order; if the lease is no longer ours, roll back and apply nothing;
4. a failure goes through `store.fail` and the retry policy: `PermanentFailure` is dead at
   once, anything else is tried again later, and dead after the last attempt.

The lease covers the work: a row's handler starts only while at least half of its claim's
lease is left (LEASE_SHARE_TO_START), so a slow provider cannot make a pass outlive it; the
rows it had no time for go back unrun, the attempt their claim counted refunded. A row
whose worker died or overran its lease before (`interruptions`) is applied last and alone,
once the other rows of its claim are finished: if it kills the worker again, the sweeper
knows which row did, counts that attempt, and makes it dead after the last one.

Nothing here commits a row it does not own: every finishing statement is guarded by the lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from outbox import store
from outbox.db import transaction, utcnow
from outbox.handling import (
    ApplyAlone,
    EventContext,
    Handler,
    NoEffect,
    PermanentFailure,
    describe,
)
from outbox.logs import LINES
from outbox.models import Source, Status
from outbox.modes import mode_mismatch
from outbox.payload import UnreadablePayload, decode_body
from outbox.store import ClaimedEvent
from processors import traces
from processors.dispatch import find_handler
from processors.metrics import EVENT_SECONDS, EVENTS_PROCESSED, observe_batch, type_family
from processors.runtime import Runtime

log = logging.getLogger("outbox.processors")

#: Rows one pass applies at most: the rows its message named, then due rows nobody rang
#: (a backlog drains in batches even when rings were lost, and the next event of an object
#: follows the one just finished). Each claim's rows are applied in one transaction.
EVENTS_PER_PASS = 50
#: Times a row whose accounts another batch held is carried on to the pass's next batch
#: before it is given back: a batch holds its accounts for a few milliseconds, so most go
#: in the next one, at no cost of a transaction of their own.
BUSY_ROUNDS = 3
#: A batch of carried rows alone waits this long first, for the batch holding their accounts.
BUSY_PAUSE_SECONDS = 0.01
#: A row whose accounts stayed busy through BUSY_ROUNDS is due again this long after it was
#: given back: long enough for that batch to commit, so that the next claims do not take it
#: straight back while the account is still busy.
BUSY_ACCOUNT_DELAY = timedelta(milliseconds=100)
#: Characters of an error kept on the row (the failure log keeps its own copy).
ERROR_CAP = 2000
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


def process_pass(runtime: Runtime, ids: Sequence[int]) -> dict[Outcome, int]:
    """Claim the named rows that are due, and more due rows up to EVENTS_PER_PASS; apply them.

    Returns how many rows ended each way. A database that cannot be reached ends the pass
    quietly: the rows are still pending (or their lease runs out), and the sweeper rings again.
    """
    counts: dict[Outcome, int] = {}
    runtime.handlers  # noqa: B018  (a table that cannot be built fails the pass, not the rows)
    try:
        with runtime.one_connection() as sessions:
            budget = max(EVENTS_PER_PASS, len(ids))
            with transaction(sessions) as session:
                claimed = _claim(runtime, session, ids=list(ids), limit=budget)
            carried: list[_Step] = []
            while claimed or carried:
                if not claimed:
                    time.sleep(BUSY_PAUSE_SECONDS)  # only rows whose accounts were busy
                budget -= len(claimed)
                claimed, carried = _apply_batch(
                    runtime, sessions, claimed, counts, carried=carried, claim_next=budget
                )
    except SQLAlchemyError as exc:
        log.warning(
            "database unavailable; the sweeper will ring these rows again",
            extra={"error": describe(exc)[:300], "asked": len(ids)},
        )
    return counts


def _claim(runtime: Runtime, session: Session, *, ids: list[int], limit: int) -> list[ClaimedEvent]:
    """Up to `limit` due rows under one lease: those of `ids` first, then any others."""
    if limit <= 0:
        return []
    lease = timedelta(seconds=runtime.settings.lease_seconds)
    return store.claim_for_pass(session, now=utcnow(), lease=lease, limit=limit, ids=ids)


@dataclass(eq=False)  # a step is itself: list lookups compare identity, not every field
class _Step:
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


class _LeaseLost(Exception):
    def __init__(self, ids: set[int]) -> None:
        super().__init__(f"lease lost on rows {sorted(ids)}")
        self.ids = ids


def _apply_batch(
    runtime: Runtime,
    sessions: Callable[[], Session],
    claimed: list[ClaimedEvent],
    counts: dict[Outcome, int],
    *,
    carried: Sequence[_Step] = (),
    claim_next: int,
) -> tuple[list[ClaimedEvent], list[_Step]]:
    """Apply claimed rows together, with the rows `carried` from the pass's previous batch:
    one transaction holds all their effects and end states, and claims the next batch (up
    to `claim_next` rows, and one more for each row carried on). Returns the next batch's
    rows, and the rows carried on to it: those whose accounts another batch held (each
    carried at most BUSY_ROUNDS times, then given back).

    The batch transaction first locks every account its rows will write, in one statement
    in ascending id order (the lock order that keeps batches from deadlocking, see
    outbox/handling.py); then holds each set-based handler's rows (`apply_many`) in a
    savepoint, every other row in a savepoint of its own, so that a row that fails rolls
    back only itself and writes nothing; then the end state of every row, and the next
    claim. The statement that marks rows done is guarded by their leases: if a lease
    turned out lost, the whole transaction is rolled back, that row is left to its new
    owner, and the rows still ours go round again. If the batch still loses a lock
    conflict, it is rolled back and its rows are applied alone, each in a transaction of
    its own. Claiming the next rows in the same transaction saves a transaction per
    batch, and lets the next event of an object follow the one just done.
    """
    attempted_at = utcnow()  # one attempt time for the whole batch
    steps = [_Step(event, time.perf_counter()) for event in claimed]
    traces.begin_events(claimed)
    last = _interrupted_last(steps)
    for step in steps:
        if step.unrun or step is last:
            continue
        if _time_to_start(runtime, step.event):
            _prepare(runtime, step, attempted_at)
        else:
            step.unrun = True
    steps = [*carried, *steps]
    in_play = steps
    following: list[ClaimedEvent] = []
    together = True
    while in_play:
        try:
            following = _commit_batch(runtime, sessions, in_play, claim_next, together=together)
            break
        except _LeaseLost as lost:
            for step in in_play:
                step.apply_error = None
                step.alone = False
                if step.busy:
                    step.unrun = step.busy = step.carried = False  # its account is asked for again
                if step.event.id in lost.ids:
                    step.outcome = Outcome.LEASE_LOST
            in_play = [step for step in in_play if step.outcome is None]
        except SQLAlchemyError as exc:
            if together and _is_lock_conflict(exc):
                # A lock outside the batch's order (an account found only while applying)
                # met another batch: nothing committed; each row goes alone instead.
                together = False
                for step in in_play:
                    step.apply_error, step.alone = None, False
                    if step.busy:
                        step.unrun = step.busy = step.carried = False
                continue
            # Nothing of the batch committed; the leases run out and the rows come back.
            log.error(
                "could not commit a batch; its rows come back when their leases run out",
                extra={"count": len(in_play), "error": describe(exc)[:300]},
            )
            for step in in_play:
                step.outcome = Outcome.UNRECORDED
            break
    carry = [step for step in steps if step.carried and step.outcome is None]
    steps = [step for step in steps if step not in carry]
    alone = [step for step in steps if step.outcome is None and step is not last]
    for step in alone:
        _commit_alone(runtime, sessions, step)
    if last is not None and last.outcome is None:
        _apply_last_alone(runtime, sessions, last, attempted_at)
        alone.append(last)
    if alone and claim_next > 0:
        try:
            with transaction(sessions) as session:
                following = _claim(runtime, session, ids=[], limit=claim_next)
        except SQLAlchemyError:
            following = []  # the sweeper rings what is left
    _report(steps, counts)
    for step in carry:
        step.busy = step.unrun = step.carried = False  # its accounts are asked for again
    return following, carry


def _interrupted_last(steps: list[_Step]) -> _Step | None:
    """The claim's row interrupted least often before, to apply last and alone; its other
    interrupted rows are given back unrun (each gets its turn, and a row that keeps killing
    its worker does not keep the others waiting)."""
    interrupted = sorted(
        (step for step in steps if step.event.interruptions > 0),
        key=lambda step: step.event.interruptions,
    )
    for step in interrupted[1:]:
        step.unrun = True
    return interrupted[0] if interrupted else None


def _time_to_start(runtime: Runtime, event: ClaimedEvent) -> bool:
    """Whether enough of the row's lease is left to start its handler (LEASE_SHARE_TO_START)."""
    share = timedelta(seconds=runtime.settings.lease_seconds * LEASE_SHARE_TO_START)
    return utcnow() < event.lease_expires_at - share


def _prepare(runtime: Runtime, step: _Step, now: datetime) -> None:
    """Decode the row, find its handler and run its `prepare`, outside any transaction."""
    event = step.event
    try:
        context_or_reason = event_context(runtime, event, now)
        if isinstance(context_or_reason, str):
            step.skip_reason = context_or_reason
            return
        handler = find_handler(runtime.handlers, event.source, event.event_type)
        if handler is None:
            step.skip_reason = f"no handler for {event.source} {event.event_type}"
            return
        step.handler, step.context = handler, context_or_reason
        if handler.prepare is not None:
            with traces.event_step(event, "prepare"):
                step.prepared = handler.prepare(context_or_reason)
    except Exception as exc:  # PermanentFailure, a network error: recorded with the batch
        step.prepare_error = exc


def _commit_batch(
    runtime: Runtime,
    sessions: Callable[[], Session],
    steps: list[_Step],
    claim_next: int,
    *,
    together: bool = True,
) -> list[ClaimedEvent]:
    """One transaction: every row's effects, every row's end state, then the next claim;
    raises _LeaseLost. Without `together`, it applies nothing and leaves every row with a
    handler to apply alone afterwards (the fallback when a batch met a lock conflict).
    A row whose accounts another batch holds stays ours, unfinished, carried on to the
    next batch (which claims one row fewer for it), at most BUSY_ROUNDS times; then it is
    given back, due after BUSY_ACCOUNT_DELAY."""
    with transaction(sessions) as session:
        applicable = [s for s in steps if _applicable(s)] if together else []
        if applicable:
            applicable = _lock_accounts_first(session, applicable)
            _apply_in_batch(session, applicable)
        now = utcnow()
        applied = [s for s in applicable if not s.alone and s.apply_error is None]
        notes = {s.event.id: s.note for s in applied if s.note is not None}
        finished = store.mark_done_many(session, [s.event for s in applied], now, notes=notes)
        lost = {s.event.id for s in applied} - finished
        if lost:
            raise _LeaseLost(lost)  # rolls every row's effects back with the transaction
        unrun = [s.event for s in steps if s.unrun and not s.busy]
        for step in steps:
            if step.busy and step.busy_rounds < BUSY_ROUNDS:
                step.carried = True
                step.busy_rounds += 1
        busy = [s.event for s in steps if s.busy and not s.carried]
        given_back = store.give_back_unrun(session, unrun, now) if unrun else set()
        if busy:
            later = now + BUSY_ACCOUNT_DELAY
            given_back |= store.give_back_unrun(session, busy, now, due=later)
        skipping = [s for s in steps if s.skip_reason is not None and s.event.id not in finished]
        skipped = store.mark_skipped_many(
            session, [(s.event, s.skip_reason or "") for s in skipping], now
        )
        for step in steps:
            if step.event.id in finished:
                step.outcome = Outcome.DONE
            elif step.carried:
                continue  # tried again in the next batch
            elif step.unrun:
                released = step.event.id in given_back
                step.outcome = Outcome.RELEASED if released else Outcome.LEASE_LOST
            elif step.skip_reason is not None:
                step.outcome = Outcome.SKIPPED if step.event.id in skipped else Outcome.LEASE_LOST
            elif step.error is not None:
                step.outcome = _record_failure(runtime, session, step, now)
            else:
                step.alone = True  # applied after this transaction, in one of its own
        if any(step.alone for step in steps):
            return []  # claimed after those: the next event of their object waits for them
        carried = sum(1 for step in steps if step.carried)
        return _claim(runtime, session, ids=[], limit=max(claim_next, 0) + carried)


def _applicable(step: _Step) -> bool:
    return (
        step.handler is not None
        and step.context is not None
        and step.error is None
        and step.skip_reason is None
        and not step.unrun
        and not step.alone
    )


def _lock_accounts_first(session: Session, steps: list[_Step]) -> list[_Step]:
    """The batch's lock order: every account its rows will write, locked before any of them
    is applied, in one statement per lock (ascending ids), skipping the accounts another
    batch holds. The rows left to apply are returned; a row whose account another batch
    holds is given back unrun instead (its attempt refunded), due again after
    BUSY_ACCOUNT_DELAY: a later claim, of this batch or another, takes it again. No batch
    waits for another's accounts, so two batches never deadlock, and busy accounts do not
    make batches take turns. Each row's
    other locks are on its own object, which no other batch holds (the claim gives an
    object to one batch at a time)."""
    accounts: dict[int, list[int]] = {}
    wanted: dict[Any, set[int]] = {}
    for step in steps:
        handler = step.handler
        assert handler is not None and step.context is not None
        if handler.lock_accounts is None:
            continue
        ids = accounts[id(step)] = list(_accounts_of(session, step))
        wanted.setdefault(handler.lock_accounts, set()).update(ids)
    busy: set[int] = set()
    for lock, all_ids in wanted.items():
        if all_ids:
            busy |= lock(session, sorted(all_ids))
    if not busy:
        return steps
    for step in steps:
        if busy.intersection(accounts.get(id(step), ())):
            step.unrun = step.busy = True
    return [step for step in steps if not step.unrun]


def _accounts_of(session: Session, step: _Step) -> Iterable[int]:
    handler, context = step.handler, step.context
    assert handler is not None and context is not None
    if handler.accounts is None:
        return () if context.account_id is None else (context.account_id,)
    try:
        return list(handler.accounts(session, context, step.prepared))
    except SQLAlchemyError:
        raise
    except Exception:  # a malformed event: its apply fails with the reason, and locks nothing
        return ()


def _apply_in_batch(session: Session, steps: list[_Step]) -> None:
    """Apply the batch's rows in its transaction: each set-based handler's rows together
    (one savepoint per handler), then every other row by itself in claim order (a savepoint
    each): a row that fails rolls back only itself."""
    # Handlers sharing one `apply_many` (subscription and invoice events) apply together.
    by_handler: dict[Any, list[_Step]] = {}
    for step in sorted(steps, key=lambda s: (s.event.account_id or 0, s.event.id)):
        assert step.handler is not None
        if step.handler.apply_many is not None:
            by_handler.setdefault(step.handler.apply_many, []).append(step)
    one_by_one = {id(step) for step in steps if step.handler and step.handler.apply_many is None}
    for group in by_handler.values():
        one_by_one.update(id(step) for step in _apply_together(session, group))
    for step in steps:
        if id(step) in one_by_one:
            _apply_by_itself(session, step)


def _apply_by_itself(session: Session, step: _Step) -> None:
    """One row's `apply` in a savepoint of the batch's transaction."""
    assert step.handler is not None and step.context is not None
    try:
        with session.begin_nested(), traces.event_step(step.event, "apply"):
            applied = step.handler.apply(session, step.context, step.prepared)
        step.note = applied.reason if isinstance(applied, NoEffect) else None
    except Exception as exc:  # RetryLater, PermanentFailure, a bug: recorded with the batch
        if isinstance(exc, SQLAlchemyError) and not session.is_active:
            raise  # the connection itself failed: the whole batch waits for its leases
        if _is_lock_conflict(exc):
            step.alone = True  # a deadlock it lost: tried again in a transaction of its own
        else:
            step.apply_error = exc


#: SQLSTATEs of a transaction that lost a lock conflict: a deadlock, a serialization failure.
_LOCK_CONFLICTS = frozenset({"40P01", "40001"})


def _is_lock_conflict(exc: BaseException) -> bool:
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _LOCK_CONFLICTS


def _commit_alone(runtime: Runtime, sessions: Callable[[], Session], step: _Step) -> None:
    """Apply one row in a transaction of its own, then record how it ended."""
    assert step.handler is not None and step.context is not None
    try:
        with transaction(sessions) as session:
            with traces.event_step(step.event, "apply"):
                applied = step.handler.apply(session, step.context, step.prepared)
            note = applied.reason if isinstance(applied, NoEffect) else None
            if not store.mark_done(session, step.event, utcnow(), note=note):
                raise _LeaseLost({step.event.id})  # rolls the row's effects back
        step.outcome = Outcome.DONE
        return
    except _LeaseLost:
        step.outcome = Outcome.LEASE_LOST
        return
    except Exception as exc:  # RetryLater, PermanentFailure, a bug, a deadlock: recorded
        step.apply_error = exc
    try:
        with transaction(sessions) as session:
            step.outcome = _record_failure(runtime, session, step, utcnow())
    except SQLAlchemyError as exc:
        log.error(
            "could not record a failed attempt; the row's lease will run out and it comes back",
            extra={"event_id": step.event.id, "error": describe(exc)[:300]},
        )
        step.outcome = Outcome.UNRECORDED


def _apply_last_alone(
    runtime: Runtime, sessions: Callable[[], Session], step: _Step, now: datetime
) -> None:
    """An interrupted row, once every other row of its claim is finished: prepared and
    applied alone (or given back unrun when too little of the lease is left)."""
    try:
        if not _time_to_start(runtime, step.event):
            with transaction(sessions) as session:
                given_back = store.give_back_unrun(session, [step.event], utcnow())
            step.outcome = Outcome.RELEASED if given_back else Outcome.LEASE_LOST
            return
        _prepare(runtime, step, now)
        if step.skip_reason is not None:
            with transaction(sessions) as session:
                skipped = store.mark_skipped(session, step.event, step.skip_reason, utcnow())
            step.outcome = Outcome.SKIPPED if skipped else Outcome.LEASE_LOST
            return
        if step.error is not None:
            with transaction(sessions) as session:
                step.outcome = _record_failure(runtime, session, step, utcnow())
            return
    except SQLAlchemyError as exc:
        log.error(
            "could not finish an interrupted row; its lease will run out and it comes back",
            extra={"event_id": step.event.id, "error": describe(exc)[:300]},
        )
        step.outcome = Outcome.UNRECORDED
        return
    _commit_alone(runtime, sessions, step)


def _apply_together(session: Session, group: list[_Step]) -> list[_Step]:
    """Apply one handler's rows with its `apply_many`, in a savepoint; the rows left to
    apply by themselves: those it declines (ApplyAlone), and every row when it fails as a
    whole."""
    handler = group[0].handler
    assert handler is not None and handler.apply_many is not None
    try:
        with session.begin_nested():
            results = handler.apply_many(
                session,
                [(step.context, step.prepared) for step in group],  # type: ignore[misc]
            )
    except Exception as exc:
        if isinstance(exc, SQLAlchemyError) and not session.is_active:
            raise  # the connection itself failed: the whole batch waits for its leases
        log.warning(
            "applying rows together failed; applying them one by one",
            extra={"handler": handler.name, "count": len(group), "error": describe(exc)[:300]},
        )
        return group
    declined = []
    for step, result in zip(group, results, strict=True):
        if isinstance(result, ApplyAlone):
            declined.append(step)
        elif isinstance(result, NoEffect):
            step.note = result.reason
        else:
            step.apply_error = result
    return declined


def _record_failure(runtime: Runtime, session: Session, step: _Step, now: datetime) -> Outcome:
    """Back to pending after the policy's delay, or dead: PermanentFailure or no tries left."""
    exc = step.error
    assert exc is not None
    permanent = isinstance(exc, PermanentFailure)
    text = f"permanent: {describe(exc)}" if permanent else describe(exc)
    status = store.fail(
        session,
        step.event,
        text[:ERROR_CAP],
        policy=runtime.policy,
        now=now,
        permanent=permanent,
    )
    if status is None:
        return Outcome.LEASE_LOST
    return Outcome.DEAD if status == Status.DEAD else Outcome.RETRY


def event_context(runtime: Runtime, event: ClaimedEvent, now: datetime) -> EventContext | str:
    """The handler's view of the row, or the reason it must be skipped (PermanentFailure
    for a row that can never be read: its body purged or unreadable)."""
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
        now=now,
    )


#: Outcomes logged at INFO; the others are warnings.
_ROUTINE = (Outcome.DONE, Outcome.SKIPPED, Outcome.RELEASED)


def _report(steps: Sequence[_Step], counts: dict[Outcome, int]) -> None:
    """Count, time and log how each row ended: one JSON log line per row, as the README
    promises. The rows that ended routinely go out as one record per outcome carrying a
    line each (outbox.logs.LINES), and are counted with one `inc(n)` per outcome: per row,
    logging's machinery and the metrics' label lookups cost more than the lines."""
    finished = time.perf_counter()
    logged = log.isEnabledFor(logging.INFO)
    routine: dict[Outcome, list[dict[str, Any]]] = {}
    counted: dict[tuple[str, str, Outcome], int] = {}
    timers: dict[str, Any] = {}
    for step in steps:
        outcome = step.outcome or Outcome.UNRECORDED
        counts[outcome] = counts.get(outcome, 0) + 1
        traces.end_event(step.event, outcome.value, step.error)
        source = step.event.source
        key = (source, type_family(step.event.event_type), outcome)
        counted[key] = counted.get(key, 0) + 1
        timer = timers.get(source) or timers.setdefault(source, EVENT_SECONDS.labels(source))
        elapsed = finished - step.started
        timer.observe(elapsed)
        if outcome in _ROUTINE:
            if logged:
                routine.setdefault(outcome, []).append(_fields(step, outcome, elapsed))
        elif log.isEnabledFor(logging.WARNING):
            log.warning("event %s", outcome.value, extra=_fields(step, outcome, elapsed))
    for (source, family, outcome), number in counted.items():
        EVENTS_PROCESSED.labels(source, family, outcome.value).inc(number)
    if steps:
        observe_batch(len(steps), finished - min(step.started for step in steps))
    for outcome, lines in routine.items():
        log.info("event %s", outcome.value, extra={LINES: lines})


def _fields(step: _Step, outcome: Outcome, elapsed: float) -> dict[str, Any]:
    """The fields of a row's outcome line."""
    event = step.event
    fields: dict[str, Any] = {
        "event_id": event.id,
        "source": event.source,
        "delivery_id": event.delivery_id,
        "event_type": event.event_type,
        "attempt": event.attempts,
        "outcome": outcome.value,
        "ms": round(elapsed * 1000, 2),
    }
    error = step.error
    for key, value in (
        ("handler", _name(step.handler)),
        ("reason", step.skip_reason),
        ("error", describe(error) if error is not None and outcome != Outcome.DONE else None),
    ):
        if value is not None:
            fields[key] = value[:500]
    return fields


def _name(handler: Handler | None) -> str | None:
    return handler.name if handler is not None else None
