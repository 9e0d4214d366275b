"""The actor that applies webhook events, and the doorbell that rings it.

`process_events(ids)` is the whole Dramatiq side of event processing: the message carries
row ids only (the table is the truth), and the actor hands them to processors/apply.py.
The ingress rings it through `EventsDoorbell` after each commit; the sweeper rings it for
rows that are due and were not picked up (a lost message, a retry whose time has come).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import dramatiq
from sqlalchemy.orm import Session

from outbox import recovery
from processors import runtime, traces
from processors.apply import EVENTS_PER_PASS, process_pass
from processors.broker import messages_out
from processors.runtime import Runtime
from processors.sweeper import Ring, SweepSource, register_sweep_source

QUEUE = "events"
#: Ids carried by one message: as many as one pass applies. A pass claims its message's
#: rows and then other due rows up to EVENTS_PER_PASS, so with fewer ids per message the
#: first pass of a big ring (a backlog, the sweeper's 1,000 due rows) took the rows the
#: next messages named and walked the due index for them, and most messages then found
#: nothing left: each still cost a Redis fetch and ack and a claim. A ring of a few ids
#: (the ingress's usual commit) is one message either way.
IDS_PER_MESSAGE = EVENTS_PER_PASS
#: A new row received less than this ago was just rung by the ingress; the sweeper leaves
#: it to that ring instead of sending a second message. Retries are rung once due. Short:
#: when the ingress could not ring, a row waits up to one sweep interval plus this.
RING_GRACE_SECONDS = 0.1  #: seconds (or the sweep interval, when that is shorter)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def process_events(ids: list[int]) -> None:
    """Apply these outbox rows (those still due), and a few more due ones."""
    with traces.pass_span(len(ids)):
        process_pass(runtime.current(), ids)


def ring_events(ids: Sequence[int]) -> list[Ring]:
    """Send `process_events` messages for these ids; raises when the broker cannot take them."""
    ids = list(ids)
    rings = []
    for start in range(0, len(ids), IDS_PER_MESSAGE):
        chunk = ids[start : start + IDS_PER_MESSAGE]
        message = process_events.send(chunk)
        rings.append(Ring(message.options.get("redis_message_id", message.message_id), chunk))
    return rings


def _rings_out(message_ids: list[str]) -> set[str]:
    return messages_out(dramatiq.get_broker(), QUEUE, message_ids)


class EventsDoorbell:
    """The ingress's doorbell (outbox.doorbell.Doorbell): one message per few ids."""

    def ring(self, event_ids: Sequence[int]) -> None:
        ring_events(event_ids)


def _due_events(session: Session, now: datetime, limit: int) -> list[int]:
    grace = min(RING_GRACE_SECONDS, runtime.current().settings.sweep_interval_seconds)
    return recovery.due_ids(session, now=now, limit=limit, fresh_grace=timedelta(seconds=grace))


def _apply_here(runtime: Runtime, ids: list[int]) -> None:
    """With the broker down, the sweeper applies due events itself, a pass's worth at a time."""
    for start in range(0, len(ids), EVENTS_PER_PASS):
        with traces.pass_span(len(ids[start : start + EVENTS_PER_PASS])):
            process_pass(runtime, ids[start : start + EVENTS_PER_PASS])


register_sweep_source(
    SweepSource(
        "webhook_events",
        find_due=_due_events,
        enqueue=ring_events,
        work_here=_apply_here,
        rings_out=_rings_out,
    )
)
