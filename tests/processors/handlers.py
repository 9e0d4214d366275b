"""A trivial handler for the processors' tests: it records one effect row per event applied.

Tests name it with `HANDLER_TABLE=tests.processors.handlers:handler_table`. What it does
is read from the event's own payload, under "test":

    {"sleep": 0.5}            sleep inside the transaction, after writing the effect
    {"hold": "/tmp/go"}       then wait (30 s at most) inside the transaction until that file exists
    {"announce": "/tmp/f"}    first append "<event id> <pid>" to that file (a test kills that pid)
    {"fail": "retry"}         raise RetryLater every time
    {"fail": "permanent"}     raise PermanentFailure
    {"fail": "crash"}         raise a plain RuntimeError
    {"fail_until": 3}         fail (RuntimeError) on attempts before the 3rd
    {"prepare_sleep": 0.5}    sleep in `prepare`, outside the transaction (a slow provider read)
    {"die": true}             raise WorkerDied: the worker process dies while applying it

The effect is a row in `test_effects`, written in the same transaction that marks the
event done: counting rows per event is counting how many times it was applied.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Session

from outbox.handling import (
    EventContext,
    Failed,
    Handler,
    HandlerTable,
    LeftToApply,
    ManyResult,
    PermanentFailure,
    RetryLater,
)
from outbox.models import Source
from outbox.settings import Settings
from outbox.store import IncomingEvent
from tests.factories import incoming

TEST_EVENT_TYPE = "test.effect"
HANDLER_TABLE = "tests.processors.handlers:handler_table"

metadata = MetaData()
effects = Table(
    "test_effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", BigInteger, nullable=False),
    Column("object_id", String(255)),
    Column("pid", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    #: seconds since the epoch, from the worker's clock, when apply began and ended
    Column("started", Float, nullable=False),
    Column("finished", Float),
)


def create_effects_table(engine: Engine) -> None:
    metadata.create_all(engine)


def effect_counts(engine: Engine) -> dict[int, int]:
    """event id -> how many effect rows it has."""
    query = select(effects.c.event_id, func.count()).group_by(effects.c.event_id)
    with engine.connect() as conn:
        return {int(event_id): int(n) for event_id, n in conn.execute(query)}


def effect_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(effects).order_by(effects.c.started)))


class WorkerDied(BaseException):
    """The worker process dies: nothing after it runs, nothing of its transaction commits."""


def prepare_effect(event: EventContext) -> None:
    time.sleep(float((event.payload.get("test") or {}).get("prepare_sleep", 0)))


def record_effect(session: Session, event: EventContext, _prepared: Any) -> None:
    script = event.payload.get("test") or {}
    started = time.time()
    if script.get("die"):
        raise WorkerDied
    if script.get("announce"):
        with open(script["announce"], "a") as marker:
            marker.write(f"{event.id} {os.getpid()}\n")
    fail = script.get("fail")
    if fail == "retry":
        raise RetryLater("the test says: not yet")
    if fail == "permanent":
        raise PermanentFailure("the test says: never")
    if fail == "crash":
        raise RuntimeError("the test says: crash")
    if event.attempts < int(script.get("fail_until", 0)):
        raise RuntimeError(f"the test says: fail attempt {event.attempts}")
    result = session.execute(
        insert(effects).values(
            event_id=event.id,
            object_id=(event.payload.get("data") or {}).get("object", {}).get("id"),
            pid=os.getpid(),
            attempt=event.attempts,
            started=started,
        )
    )
    time.sleep(float(script.get("sleep", 0)))
    while script.get("hold") and not os.path.exists(script["hold"]) and time.time() < started + 30:
        time.sleep(0.02)
    session.execute(
        effects.update()
        .where(effects.c.id == result.inserted_primary_key[0])
        .values(finished=time.time())
    )


def scripted_event(
    *,
    source: str = Source.STRIPE,
    object_id: str | None = None,
    script: dict[str, Any] | None = None,
    livemode: bool | None = None,
    created: datetime | None = None,
) -> IncomingEvent:
    """An incoming event for this handler; `script` says what the handler does with it."""
    delivery = f"evt_{uuid.uuid4().hex}"
    body: dict[str, Any] = {"id": delivery, "type": TEST_EVENT_TYPE, "test": script or {}}
    if livemode is not None:
        body["livemode"] = livemode
    if object_id:
        body["data"] = {"object": {"id": object_id}}
    item = incoming(
        delivery, source=source, event_type=TEST_EVENT_TYPE, object_id=object_id, body=body,
        created=created,
    )  # fmt: skip
    return replace(item, livemode=livemode)


def handler_table(_settings: Settings) -> HandlerTable:
    handler = Handler(name="record_effect", apply=record_effect, prepare=prepare_effect)
    return {("stripe", TEST_EVENT_TYPE): handler, ("github", TEST_EVENT_TYPE): handler}


#: The batch-capable test handler's own marks, besides the script above:
#:     {"alone": true}         its `apply_many` leaves the event to `apply` (LeftToApply)
#:     {"sink_batch": true}    its `apply_many` raises for the whole group
#:     {"returns_error": true} its `apply_many` returns an exception, not Failed(exception)
BATCH_HANDLER_TABLE = "tests.processors.handlers:batch_handler_table"
#: Each call of `record_effects` (the set-based apply) appends the event ids it applied.
batches_applied: list[list[int]] = []


def record_effects(session: Session, items: Sequence[tuple[EventContext, Any]]) -> list[ManyResult]:
    """`record_effect` for many events at once, as a set-based handler would."""
    if any((event.payload.get("test") or {}).get("sink_batch") for event, _ in items):
        raise RuntimeError("the test says: not as a batch")
    results: list[ManyResult] = []
    applied = []
    for event, prepared in items:
        if (event.payload.get("test") or {}).get("alone"):
            results.append(LeftToApply())
            continue
        if (event.payload.get("test") or {}).get("returns_error"):
            results.append(cast(Any, RuntimeError("the test says: returned, not raised")))
            continue
        try:
            with session.begin_nested():
                record_effect(session, event, prepared)
        except Exception as exc:
            results.append(Failed(exc))
            continue
        results.append(None)
        applied.append(event.id)
    batches_applied.append(applied)
    return results


#: Each call of `accounts_of_events` (the batch's read of its rows' accounts) appends the
#: event ids it was asked about.
account_reads: list[list[int]] = []


def accounts_of_events(
    _session: Session, items: Sequence[tuple[EventContext, Any]]
) -> list[list[int]]:
    """Every test event writes account 1 (none exists: no lock is taken, none is busy)."""
    account_reads.append([event.id for event, _ in items])
    return [[1] for _ in items]


def lock_none(_session: Session, _ids: Any) -> set[int]:
    return set()


def batch_handler_table(_settings: Settings) -> HandlerTable:
    handler = Handler(
        name="record_effects",
        apply=record_effect,
        apply_many=record_effects,
        accounts_many=accounts_of_events,
        lock_accounts=lock_none,
    )
    return {("stripe", TEST_EVENT_TYPE): handler, ("github", TEST_EVENT_TYPE): handler}
