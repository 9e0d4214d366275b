"""The Dramatiq broker: Redis for real processes, in-process for `outbox dev` and tests.

Dramatiq only rings the bell: retry state lives on the rows (outbox/retry.py and
`finishing.fail`), so Dramatiq's own Retries middleware is kept with `max_retries=0` (an
actor may still say `max_retries=0`, and nothing is ever retried by Dramatiq).

Actors are plain `@dramatiq.actor` functions in the modules of `ACTOR_MODULES`.
`setup_broker` imports each of them and binds their actors to the broker it made, so
the order of imports never matters and a test can make a fresh broker. Another area adds
its actors by adding its module to `ACTOR_MODULES` (one line).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import dramatiq
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware, Retries, default_middleware
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from outbox.deadlines import RedisDeadlineConnection
from outbox.settings import Settings

log = logging.getLogger("outbox.broker")

#: Modules whose actors every process binds to its broker.
ACTOR_MODULES: list[str] = ["processors.event_actor", "processors.jobs"]

#: Seconds a pooled connection idles before it is checked again (a PING, itself bounded
#: by the socket timeout: REDIS_TIMEOUT_SECONDS covers connects, reads and writes).
REDIS_HEALTH_CHECK = 5
#: Retries of a call that failed on a broken or timed-out connection: one, on a new
#: connection, so a failover costs a call one timeout, not several with backoffs between.
REDIS_RETRIES = 1
#: Seconds a consumer that lost Redis waits before it asks again (it logs once, not each time).
CONSUMER_PAUSE = 0.5
#: Milliseconds an idle consumer of a delay queue waits at most before it asks Redis again
#: (Dramatiq's default). Nothing here sends a delayed message (retries live on the rows),
#: yet each queue has a delay queue and a consumer polling it: at the workers' idle poll
#: (outbox/cli/work.py, 20 ms, for a ring's latency) those polls were half of an idle
#: worker's ~10 % of a core, and went on while it drained a backlog.
DELAY_QUEUE_POLL_MS = 1000


def setup_broker(settings: Settings, *, in_process: bool) -> dramatiq.Broker:
    """Make the process's broker, set it as Dramatiq's global one, and bind every actor to it.

    :param in_process: a StubBroker (messages stay in this process; run a
        `dramatiq.Worker` on it, see processors/inprocess.py) instead of Redis.
    """
    broker: dramatiq.Broker
    if in_process:
        broker = StubBroker(middleware=_middleware())
    else:
        client = redis_client(settings)
        broker = _RedisBroker(
            client=client, namespace=settings.redis_namespace, middleware=_middleware()
        )
    dramatiq.set_broker(broker)
    for actor in declared_actors():
        actor.broker = broker
        broker.declare_actor(actor)
    return broker


def redis_client(settings: Settings) -> redis.Redis:
    """The broker's Redis client: every call bounded by REDIS_TIMEOUT_SECONDS, its
    connection dropped and replaced when it misses that (outbox/deadlines.py)."""
    timeout = settings.redis_timeout_seconds
    extra: dict[str, Any] = {}
    if settings.redis_url.startswith("redis://"):  # TLS and unix sockets keep their own class
        extra["connection_class"] = RedisDeadlineConnection
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=REDIS_HEALTH_CHECK,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.1), REDIS_RETRIES),
        **extra,
    )


def messages_out(broker: dramatiq.Broker, queue_name: str, message_ids: list[str]) -> set[str]:
    """Which of these messages (their Redis ids) are still out on `queue_name`: waiting, or
    taken by a worker and not yet acknowledged (Dramatiq keeps a message in the queue's
    hash until its ack). Followed on Redis only: an in-process broker answers none."""
    if not message_ids or not isinstance(broker, RedisBroker):
        return set()
    key = f"{broker.namespace}:{queue_name}.msgs"
    with broker.client.pipeline(transaction=False) as pipe:
        for message_id in message_ids:
            pipe.hexists(key, message_id)
        found = pipe.execute()
    return {message_id for message_id, out in zip(message_ids, found, strict=True) if out}


def declared_actors() -> list[dramatiq.Actor]:  # type: ignore[type-arg]
    """Every actor of `ACTOR_MODULES`, importing the modules as needed."""
    return [
        value
        for module in import_actor_modules()
        for value in vars(module).values()
        if isinstance(value, dramatiq.Actor)
    ]


def import_actor_modules() -> list[ModuleType]:
    """Import every module of `ACTOR_MODULES` (which also registers their sweep sources)."""
    return [importlib.import_module(name) for name in ACTOR_MODULES]


class _RedisBroker(RedisBroker):
    """Dramatiq's Redis broker, whose delay queues are polled at DELAY_QUEUE_POLL_MS, and
    whose consumers wait out a lost Redis instead of failing (see _PatientConsumer)."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if queue_name.endswith(".DQ"):
            timeout = max(timeout, DELAY_QUEUE_POLL_MS)
        return _PatientConsumer(super().consume(queue_name, prefetch, timeout), queue_name)


class _PatientConsumer(Consumer):
    """A Redis consumer that, when Redis does not answer, says so once as a WARNING, waits
    CONSUMER_PAUSE and asks again, on a new connection.

    Dramatiq's own consumer lets a timed-out call escape (it only translates connection
    errors), and its worker logs any escape as CRITICAL, then restarts the consumer 3 s
    later: a failover read as a crash, and delayed the work by the restart.
    """

    def __init__(self, consumer: Consumer, queue_name: str) -> None:
        self._consumer = consumer
        self._queue_name = queue_name
        self._lost_since: float | None = None

    def __next__(self) -> MessageProxy | None:
        try:
            message = next(self._consumer)
        except (ConnectionClosed, redis.RedisError) as exc:
            self._lost(exc)
            time.sleep(CONSUMER_PAUSE)
            return None
        if self._lost_since is not None:
            log.info(
                "consumer reached Redis again",
                extra={
                    "queue": self._queue_name,
                    "after_s": round(time.monotonic() - self._lost_since, 1),
                },
            )
            self._lost_since = None
        return message  # type: ignore[no-any-return]

    def _lost(self, exc: BaseException) -> None:
        if self._lost_since is None:
            self._lost_since = time.monotonic()
            log.warning(
                "consumer lost Redis; asking again every %g s",
                CONSUMER_PAUSE,
                extra={"queue": self._queue_name, "error": f"{type(exc).__name__}: {exc}"[:300]},
            )

    def ack(self, message: MessageProxy) -> None:
        with _as_connection_closed():
            self._consumer.ack(message)

    def nack(self, message: MessageProxy) -> None:
        with _as_connection_closed():
            self._consumer.nack(message)

    def requeue(self, messages: Any) -> None:
        with _as_connection_closed():
            self._consumer.requeue(messages)

    def close(self) -> None:
        self._consumer.close()

    def __getattr__(self, name: str) -> Any:  # the rest is Dramatiq's consumer's own
        return getattr(self._consumer, name)


@contextlib.contextmanager
def _as_connection_closed() -> Iterator[None]:
    """Redis errors as Dramatiq's ConnectionClosed, which its worker retries with a warning."""
    try:
        yield
    except redis.ResponseError:
        raise
    except redis.RedisError as exc:
        raise ConnectionClosed(exc) from exc


def _middleware() -> list[Middleware]:
    return [Retries(max_retries=0) if m is Retries else m() for m in default_middleware]
