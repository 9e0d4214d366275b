"""The ingress's Redis doorbell, rung from its event loop (`outbox serve`).

The messages are Dramatiq's own: `process_events` messages built and encoded by Dramatiq,
written where its Redis broker keeps a queue, as its enqueue script does: the message under
its id in the queue's hash (`<namespace>:events.msgs`), the id pushed on the queue's list
(`<namespace>:events`). Workers consume them like any other. Here every message of a ring
goes in one MULTI, over redis.asyncio, on the ingress's event loop.

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
from processors.events import IDS_PER_MESSAGE, process_events


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
    """Put `messages` on their queues as Dramatiq's Redis broker does, in one round trip."""
    sent = [m.copy(options={"redis_message_id": str(uuid4())}) for m in messages]
    for message in sent:
        broker.emit_before("enqueue", message, None)
    async with client.pipeline(transaction=True) as pipe:
        for message in sent:
            queue = f"{namespace}:{message.queue_name}"
            redis_id = message.options["redis_message_id"]
            pipe.hset(f"{queue}.msgs", redis_id, message.encode())
            pipe.rpush(queue, redis_id)
        await pipe.execute()
    for message in sent:
        broker.emit_after("enqueue", message, None)
