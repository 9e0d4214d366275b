"""The Dramatiq broker: Redis for real processes, in-process for `outbox dev` and tests.

Dramatiq only rings the bell: retry state lives on the rows (outbox/retry.py and
`store.fail`), so Dramatiq's own Retries middleware is kept with `max_retries=0` (an
actor may still say `max_retries=0`, and nothing is ever retried by Dramatiq).

Actors are plain `@dramatiq.actor` functions in the modules of `ACTOR_MODULES`.
`setup_broker` imports each of them and binds their actors to the broker it made, so
the order of imports never matters and a test can make a fresh broker. Another area adds
its actors by adding its module to `ACTOR_MODULES` (one line).
"""

from __future__ import annotations

import importlib
from types import ModuleType

import dramatiq
import redis
from dramatiq.broker import Consumer
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, Retries, default_middleware

from outbox.settings import Settings

#: Modules whose actors every process binds to its broker.
ACTOR_MODULES: list[str] = ["processors.events", "processors.jobs"]

REDIS_CONNECT_TIMEOUT = 2.0  #: seconds; Redis down must turn into a dropped ring, not a hang
REDIS_SOCKET_TIMEOUT = 10.0  #: seconds; Dramatiq's Redis fetch is a script call, never blocking
REDIS_HEALTH_CHECK = 15  #: seconds a pooled connection idles before it is checked again
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
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
            socket_timeout=REDIS_SOCKET_TIMEOUT,
            health_check_interval=REDIS_HEALTH_CHECK,
        )
        broker = _RedisBroker(
            client=client, namespace=settings.redis_namespace, middleware=_middleware()
        )
    dramatiq.set_broker(broker)
    for actor in declared_actors():
        actor.broker = broker
        broker.declare_actor(actor)
    return broker


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
    """Dramatiq's Redis broker, whose delay queues are polled at DELAY_QUEUE_POLL_MS."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if queue_name.endswith(".DQ"):
            timeout = max(timeout, DELAY_QUEUE_POLL_MS)
        return super().consume(queue_name, prefetch, timeout)


def _middleware() -> list[Middleware]:
    return [Retries(max_retries=0) if m is Retries else m() for m in default_middleware]
