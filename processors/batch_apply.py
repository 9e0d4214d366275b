"""Applying a batch's rows inside its one transaction: their accounts locked first, then
each set-based handler's rows together, then every other row by itself.

The lock order (outbox/handling.py): every account the batch's rows will write is read
(one read per handler for the whole batch, `accounts_many`, else one per row) and locked
in one statement, ascending ids, skipping the accounts another batch holds; a row whose
account is busy is not applied in this batch (processors/apply.py carries it on).

Failure isolation: a row that fails writes nothing. A set-based handler returns each
row's failure instead of raising (its contract), so its rows apply without a savepoint;
only if it raises as a whole (a bug, a lost lock conflict) is the batch's transaction
rolled back and applied again with each group in a savepoint of its own (`guarded`),
where a group that fails leaves its rows to apply by themselves. A row of a handler
without `apply_many`, or one a set-based handler declines, applies in a savepoint of its
own: its `apply` may raise at any point.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from outbox.handling import Failed, Handler, LeftToApply, ManyResult, NoEffect, describe
from processors import traces
from processors.steps import Step

log = logging.getLogger("outbox.processors")

#: SQLSTATEs of a transaction that lost a lock conflict: a deadlock, a serialization failure.
_LOCK_CONFLICTS = frozenset({"40P01", "40001"})


class GroupFailed(Exception):
    """A set-based handler raised as a whole outside a savepoint: the batch's transaction
    must be rolled back and applied again `guarded`."""


def is_lock_conflict(exc: BaseException) -> bool:
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _LOCK_CONFLICTS


def lock_accounts_first(session: Session, steps: list[Step]) -> list[Step]:
    """The batch's lock order: every account its rows will write, locked before any of them
    is applied, in one statement per lock (ascending ids), skipping the accounts another
    batch holds. The rows left to apply are returned; a row whose account another batch
    holds is marked busy and unrun instead. No batch waits for another's accounts, so two
    batches never deadlock. Each row's other locks are on its own object, which no other
    batch holds (the claim gives an object to one batch at a time)."""
    locking = [s for s in steps if s.handler is not None and s.handler.lock_accounts is not None]
    read_accounts(session, [s for s in locking if s.accounts is None])
    wanted: dict[Any, set[int]] = {}
    for step in locking:
        assert step.handler is not None and step.accounts is not None
        wanted.setdefault(step.handler.lock_accounts, set()).update(step.accounts)
    busy: set[int] = set()
    for lock, ids in wanted.items():
        if ids:
            busy |= lock(session, sorted(ids))
    if not busy:
        return steps
    for step in locking:
        if busy.intersection(step.accounts or ()):
            step.unrun = step.busy = True
    return [step for step in steps if not step.unrun]


def read_accounts(session: Session, steps: list[Step]) -> None:
    """Each row's accounts (kept on the step): the rows of a handler with `accounts_many`
    in one read for the lot, the others one by one. A malformed event locks nothing: its
    apply fails with the reason."""
    together: dict[Any, list[Step]] = {}
    for step in steps:
        handler, context = step.handler, step.context
        assert handler is not None and context is not None
        if handler.accounts_many is not None:
            together.setdefault(handler.accounts_many, []).append(step)
        elif handler.accounts is None:
            step.accounts = () if context.account_id is None else (context.account_id,)
        else:
            step.accounts = tuple(_guarded(handler.accounts, session, context, step.prepared))
    for read, group in together.items():
        found = _guarded(read, session, [(s.context, s.prepared) for s in group])
        if len(found) != len(group):  # it failed as a whole: one by one, as `accounts` would
            for step in group:
                assert step.handler is not None
                single = step.handler.accounts
                found_one = (
                    () if single is None else _guarded(single, session, step.context, step.prepared)
                )
                step.accounts = tuple(found_one)
            continue
        for step, ids in zip(group, found, strict=True):
            step.accounts = tuple(ids)


def _guarded(read: Any, *args: Any) -> tuple[Any, ...]:
    """What `read(*args)` gives, as a tuple; nothing when the event it reads is malformed."""
    try:
        return tuple(read(*args))
    except SQLAlchemyError:
        raise
    except Exception:
        return ()


def apply_in_batch(session: Session, steps: list[Step], *, guarded: bool) -> None:
    """Apply the batch's rows in its transaction: each set-based handler's rows together
    (each group in a savepoint of its own when `guarded`, else none: GroupFailed if one
    raises), then every other row by itself in claim order, a savepoint each."""
    groups: dict[Any, list[Step]] = {}
    # Handlers sharing one `apply_many` (subscription and invoice events) apply together.
    for step in sorted(steps, key=lambda s: (s.event.account_id or 0, s.event.id)):
        assert step.handler is not None
        if step.handler.apply_many is not None:
            groups.setdefault(step.handler.apply_many, []).append(step)
    one_by_one = {id(step) for step in steps if step.handler and step.handler.apply_many is None}
    for group in groups.values():
        one_by_one.update(id(step) for step in _apply_together(session, group, guarded=guarded))
    for step in steps:
        if id(step) in one_by_one:
            _apply_by_itself(session, step)


def _apply_together(session: Session, group: list[Step], *, guarded: bool) -> Iterable[Step]:
    """Apply one handler's rows with its `apply_many`; the rows left to apply by themselves:
    those it leaves to `apply` (LeftToApply), and every row when it fails as a whole (guarded)."""
    handler = group[0].handler
    assert handler is not None and handler.apply_many is not None
    items = [(step.context, step.prepared) for step in group]
    try:
        if guarded:
            with session.begin_nested():
                results = _apply_many(handler, session, items)
        else:
            results = _apply_many(handler, session, items)
    except Exception as exc:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise  # the connection itself failed: the whole batch waits for its leases
        if not guarded:
            raise GroupFailed(handler.name) from exc  # the transaction cannot go on
        if isinstance(exc, SQLAlchemyError) and not session.is_active:
            raise  # the savepoint could not be rolled back: the connection failed
        log.warning(
            "applying rows together failed; applying them one by one",
            extra={"handler": handler.name, "count": len(group), "error": describe(exc)[:300]},
        )
        return group
    declined = []
    for step, result in zip(group, results, strict=True):
        if isinstance(result, LeftToApply):
            declined.append(step)
        elif isinstance(result, NoEffect):
            step.note = result.reason
        elif isinstance(result, Failed):
            step.apply_error = result.error
    return declined


def _apply_many(handler: Handler, session: Session, items: list[Any]) -> Sequence[ManyResult]:
    """The handler's `apply_many` of the items; a result outside the contract (an exception
    returned rather than Failed) counts as its raising as a whole, not as the row applied."""
    assert handler.apply_many is not None
    results = handler.apply_many(session, items)
    for result in results:
        if not (result is None or isinstance(result, Failed | NoEffect | LeftToApply)):
            raise TypeError(
                f"{handler.name}: apply_many gave {result!r}, not None, NoEffect, "
                "LeftToApply or Failed"
            )
    return results


def _apply_by_itself(session: Session, step: Step) -> None:
    """One row's `apply` in a savepoint of the batch's transaction."""
    assert step.handler is not None and step.context is not None
    try:
        with session.begin_nested(), traces.event_step(step.event, "apply"):
            applied = step.handler.apply(session, step.context, step.prepared)
        step.note = applied.reason if isinstance(applied, NoEffect) else None
    except Exception as exc:  # RetryLater, PermanentFailure, a bug: recorded with the batch
        if isinstance(exc, SQLAlchemyError) and not session.is_active:
            raise  # the connection itself failed: the whole batch waits for its leases
        if is_lock_conflict(exc):
            step.alone = True  # a deadlock it lost: tried again in a transaction of its own
        else:
            step.apply_error = exc
