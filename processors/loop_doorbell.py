"""The ingress's Redis doorbell, rung from its event loop (`outbox serve`).

The messages are Dramatiq's own: `process_events` messages built and encoded by Dramatiq,
written where its Redis broker keeps a queue, as its enqueue script does: the message under
its id in the queue's hash (`<namespace>:events.msgs`), the id pushed on the queue's list
(`<namespace>:events`). Workers consume them like any other. Here every message of a ring
goes in one round trip, over redis.asyncio, on the ingress's event loop.

Why not `process_events.send`: it is blocking redis-py, so the ingress sent from a
thread, which took the interpreter from the event loop at every ring; ringing that way
cost 40 % of the ingress's rate (docs/performance.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import uuid4

import dramatiq
import redis.asyncio
from dramatiq import Message

from outbox.settings import Settings
from processors.broker import setup_broker
from processors.event_actor import IDS_PER_MESSAGE, process_events


class RedisLoopDoorbell:
    """An `outbox.doorbell.LoopDoorbell`: one MULTI per ring, one message per
    IDS_PER_MESSAGE ids, each call bounded by REDIS_TIMEOUT_SECONDS."""

    def __init__(self, settings: Settings) -> None:
        self._broker = setup_broker(settings, in_process=False)
        self._namespace: str = self._broker.namespace  # type: ignore[attr-defined]
        self._timeout = settings.redis_timeout_seconds
        self._client = redis.asyncio.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=self._timeout,
            socket_timeout=self._timeout,
        )

    async def ring(self, event_ids: Sequence[int]) -> None:
        ids = list(event_ids)
        messages = [
            process_events.message(ids[start : start + IDS_PER_MESSAGE])
            for start in range(0, len(ids), IDS_PER_MESSAGE)
        ]
        async with asyncio.timeout(self._timeout):
            await enqueue(self._client, self._broker, self._namespace, messages)

    async def close(self) -> None:
        await self._client.aclose()


async def enqueue(
    client: redis.asyncio.Redis,
    broker: dramatiq.Broker,
    namespace: str,
    messages: Sequence[Message],  # type: ignore[type-arg]
) -> None:
    """Put `messages` (all of one queue) on it as Dramatiq's Redis broker does: the bodies
    in the queue's hash first, then their ids on its list; two commands in one round trip.

    Not a MULTI: a ring's CPU is mostly its round trip (~140 µs a ring, most of it the
    loopback send), and what MULTI would guard is only a body left in the hash when the
    push fails, which no worker ever reads.
    """
    if not messages:
        return
    sent = [m.copy(options={"redis_message_id": str(uuid4())}) for m in messages]
    queues = {m.queue_name for m in sent}
    if len(queues) != 1:
        raise ValueError(f"messages of several queues: {sorted(queues)}")
    queue = f"{namespace}:{queues.pop()}"
    for message in sent:
        broker.emit_before("enqueue", message, None)
    bodies = {m.options["redis_message_id"]: m.encode() for m in sent}
    async with client.pipeline(transaction=False) as pipe:
        pipe.hset(f"{queue}.msgs", mapping=bodies)
        pipe.rpush(queue, *bodies)
        await pipe.execute()
    for message in sent:
        broker.emit_after("enqueue", message, None)
