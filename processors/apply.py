"""Applying claimed events: the one path from an outbox row to its effects and its end state.

A pass claims a batch of rows (those its message named first, then other due rows), and
for each row:
1. decode the stored bytes, check the Stripe mode again, find the handler
   (none, or the wrong mode: `skipped`, never applied);
2. run the handler's `prepare` outside any transaction (network reads);
3. apply it so that its effects and `done` commit together, in the batch's one
   transaction (processors/batch_apply.py): with its handler's set-based `apply_many`
   beside the other rows of that handler, else by itself in a savepoint; the accounts the
   batch writes are locked first, in id order; if the lease is no longer ours, roll back
   and apply nothing; the done and skipped rows are finished in one statement;
4. a failure goes through the retry policy (processors/alone.py, outbox/finishing.py),
   the batch's failed rows together: `PermanentFailure` is dead at once, anything else is
   tried again later, and dead after the last attempt.

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
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from outbox import claiming, finishing
from outbox.claiming import ClaimedEvent
from outbox.db import transaction, utcnow
from outbox.handling import describe
from outbox.models import Status
from processors import traces
from processors.alone import ERROR_CAP, LeaseLost, apply_last_alone, commit_alone, record_failures
from processors.batch_apply import (
    GroupFailed,
    apply_in_batch,
    is_lock_conflict,
    lock_accounts_first,
)
from processors.outcomes import report
from processors.runtime import Runtime
from processors.steps import Outcome, Step, event_context, prepare, time_to_start

__all__ = ["ERROR_CAP", "EVENTS_PER_PASS", "Outcome", "event_context", "process_pass"]

log = logging.getLogger("outbox.processors")

#: Rows one pass claims at first: the rows its message named, then due rows nobody rang
#: (a backlog drains in batches even when rings were lost, and the next event of an object
#: follows the one just finished). Each claim's rows are applied in one transaction.
#: A pass costs about a dozen statements and two commits whatever its size (checking out
#: the connection, the claim, the accounts' lock, each table's one write, the finishing
#: update), some 4 ms of worker and server CPU on 2 cores, so its size sets what they
#: cost a row: at 100 rows rather than 50, the workloads of `bench.compare --part mix
#: --rounds 3 -- --events 10000` drained 19-28 % faster (2 cores, load 1.3-3.2). A ring
#: of a few new rows is a small pass either way; a batch holds its accounts' locks until
#: it commits, and its rows' `prepare` run one after the other before it (the lease
#: bounds them, see LEASE_SHARE_TO_START).
EVENTS_PER_PASS = 100
#: Times a row whose accounts another batch held is carried on to the pass's next batch
#: before it is given back: a batch holds its accounts for a few milliseconds, so most go
#: in the next one, at no cost of a transaction of their own. A batch followed by carried
#: rows is filled up with newly claimed ones, up to EVENTS_PER_PASS, as many times in a
#: pass: rows carried on do not make a pass end in a string of small batches.
BUSY_ROUNDS = 3
#: A batch of carried rows alone waits this long first, for the batch holding their accounts.
BUSY_PAUSE_SECONDS = 0.01
#: A row whose accounts stayed busy through BUSY_ROUNDS is due again this long after it was
#: given back: long enough for that batch to commit, so that the next claims do not take it
#: straight back while the account is still busy.
BUSY_ACCOUNT_DELAY = timedelta(milliseconds=100)


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
            carried: list[Step] = []
            refills = BUSY_ROUNDS
            while claimed or carried:
                if not claimed:
                    time.sleep(BUSY_PAUSE_SECONDS)  # only rows whose accounts were busy
                budget -= len(claimed)
                claimed, carried = _apply_batch(
                    runtime, sessions, claimed, counts, carried=carried,
                    claim_next=budget, refill=refills > 0,
                )  # fmt: skip
                if carried:
                    refills -= 1
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
    return claiming.claim_for_pass(session, now=utcnow(), lease=lease, limit=limit, ids=ids)


def _apply_batch(
    runtime: Runtime,
    sessions: Callable[[], Session],
    claimed: list[ClaimedEvent],
    counts: dict[Outcome, int],
    *,
    carried: Sequence[Step] = (),
    claim_next: int,
    refill: bool = False,
) -> tuple[list[ClaimedEvent], list[Step]]:
    """Apply claimed rows together, with the rows `carried` from the pass's previous batch:
    one transaction holds all their effects and end states, and claims the next batch (up
    to `claim_next` rows, and one more for each row carried on; with `refill`, at least as
    many as fill the next batch up to EVENTS_PER_PASS). Returns the next batch's rows, and
    the rows carried on to it: those whose accounts another batch held (each carried at
    most BUSY_ROUNDS times, then given back).

    The batch transaction first locks every account its rows will write, then applies
    them (processors/batch_apply.py): a row that fails rolls back only itself and writes
    nothing; then the end state of every row, and the next claim. The statement that
    marks rows done is guarded by their leases: if a lease turned out lost, the whole
    transaction is rolled back, that row is left to its new owner, and the rows still ours
    go round again. A set-based handler that raised as a whole makes the batch go round
    again with every group in a savepoint of its own. If the batch still loses a lock
    conflict, it is rolled back and its rows are applied alone, each in a transaction of
    its own. Claiming the next rows in the same transaction saves a transaction per
    batch, and lets the next event of an object follow the one just done.
    """
    attempted_at = utcnow()  # one attempt time for the whole batch
    steps = [Step(event, time.perf_counter()) for event in claimed]
    traces.begin_events(claimed)
    last = _interrupted_last(steps)
    for step in steps:
        if step.unrun or step is last:
            continue
        if time_to_start(runtime, step.event):
            prepare(runtime, step, attempted_at)
        else:
            step.unrun = True
    steps = [*carried, *steps]
    in_play = steps
    following: list[ClaimedEvent] = []
    together, guarded = True, False
    while in_play:
        try:
            following = _commit_batch(
                runtime, sessions, in_play, claim_next, together=together, guarded=guarded,
                refill=refill,
            )  # fmt: skip
            break
        except LeaseLost as lost:
            for step in in_play:
                step.try_again()
                if step.event.id in lost.ids:
                    step.outcome = Outcome.LEASE_LOST
            in_play = [step for step in in_play if step.outcome is None]
        except GroupFailed:
            guarded = True  # nothing committed; each group goes in a savepoint of its own
            for step in in_play:
                step.try_again()
        except SQLAlchemyError as exc:
            if together and is_lock_conflict(exc):
                # A lock outside the batch's order (an account found only while applying)
                # met another batch: nothing committed; each row goes alone instead.
                together = False
                for step in in_play:
                    step.try_again()
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
        commit_alone(runtime, sessions, step)
    if last is not None and last.outcome is None:
        apply_last_alone(runtime, sessions, last, attempted_at)
        alone.append(last)
    if alone and claim_next > 0:
        try:
            with transaction(sessions) as session:
                following = _claim(runtime, session, ids=[], limit=claim_next)
        except SQLAlchemyError:
            following = []  # the sweeper rings what is left
    report(steps, counts)
    for step in carry:
        step.busy = step.unrun = step.carried = False  # its accounts are asked for again
    return following, carry


def _interrupted_last(steps: list[Step]) -> Step | None:
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


def _commit_batch(
    runtime: Runtime,
    sessions: Callable[[], Session],
    steps: list[Step],
    claim_next: int,
    *,
    together: bool = True,
    guarded: bool = False,
    refill: bool = False,
) -> list[ClaimedEvent]:
    """One transaction: every row's effects, every row's end state, then the next claim;
    raises LeaseLost (or GroupFailed, see batch_apply). Without `together`, it applies
    nothing and leaves every row with a handler to apply alone afterwards (the fallback
    when a batch met a lock conflict). A row whose accounts another batch holds stays
    ours, unfinished, carried on to the next batch, at most BUSY_ROUNDS times; then it is
    given back, due after BUSY_ACCOUNT_DELAY."""
    with transaction(sessions) as session:
        applicable = [s for s in steps if _applicable(s)] if together else []
        if applicable:
            applicable = lock_accounts_first(session, applicable)
            apply_in_batch(session, applicable, guarded=guarded)
        now = utcnow()
        applied = [s for s in applicable if not s.alone and s.apply_error is None]
        skipping = [s for s in steps if s.skip_reason is not None]
        finished = finishing.finish_many(
            session,
            [(s.event, Status.DONE, s.note) for s in applied]
            + [(s.event, Status.SKIPPED, s.skip_reason) for s in skipping],
            now,
        )
        lost = {s.event.id for s in applied} - finished
        if lost:
            raise LeaseLost(lost)  # rolls every row's effects back with the transaction
        unrun = [s.event for s in steps if s.unrun and not s.busy]
        for step in steps:
            if step.busy and step.busy_rounds < BUSY_ROUNDS:
                step.carried = True
                step.busy_rounds += 1
        busy = [s.event for s in steps if s.busy and not s.carried]
        given_back = finishing.give_back_unrun(session, unrun, now) if unrun else set()
        if busy:
            later = now + BUSY_ACCOUNT_DELAY
            given_back |= finishing.give_back_unrun(session, busy, now, due=later)
        failed = []
        for step in steps:
            if step.event.id in finished:
                step.outcome = Outcome.SKIPPED if step.skip_reason is not None else Outcome.DONE
            elif step.carried:
                continue  # tried again in the next batch
            elif step.unrun:
                released = step.event.id in given_back
                step.outcome = Outcome.RELEASED if released else Outcome.LEASE_LOST
            elif step.skip_reason is not None:
                step.outcome = Outcome.LEASE_LOST
            elif step.error is not None:
                failed.append(step)
            else:
                step.alone = True  # applied after this transaction, in one of its own
        record_failures(runtime, session, failed, now)
        if any(step.alone for step in steps):
            return []  # claimed after those: the next event of their object waits for them
        carried = sum(1 for step in steps if step.carried)
        limit = max(claim_next, 0) + carried
        if claim_next > 0 or (refill and carried):
            # A batch costs its statements whatever its size: while the pass's budget
            # lasts (a claim that came back short, its rows' objects or accounts held by
            # another claim, leaves a few rows of it), or while it may refill carried
            # rows, the next batch is a whole one. Past both, a pass ends with its
            # carried rows alone, so a pass under contention does not go on forever.
            limit = max(limit, EVENTS_PER_PASS - carried)
        return _claim(runtime, session, ids=[], limit=limit)


def _applicable(step: Step) -> bool:
    return (
        step.handler is not None
        and step.context is not None
        and step.error is None
        and step.skip_reason is None
        and not step.unrun
        and not step.alone
    )
