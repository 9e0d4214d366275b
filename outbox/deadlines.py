"""Deadlines on database and Redis calls: a call with no answer in time costs its connection,
never a hang.

A server behind a stuck pooler, load balancer or vanished address leaves connections whose
TCP peer still acknowledges every byte: keepalives, `tcp_user_timeout` and the server's
`statement_timeout` never fire for them. So the service bounds each call itself. A call
that misses its deadline has its connection discarded (its socket shut down, never
returned to a pool) and the next call opens a replacement; each such stall is a WARNING
line and a count in `outbox_stalled_calls`.

- Postgres through psycopg: `DeadlineConnection` bounds every exchange with the server
  (statement, commit, rollback, the pool's ping) by `call_deadline(timeout)`; the ingress's
  asynchronous writer bounds each batch the same way (ingress/postgres_writer.py).
- Redis: the client's socket timeout, and `RedisDeadlineConnection`, which reports a miss
  (redis-py itself drops the connection and the retry opens a replacement).
"""

from __future__ import annotations

import logging
import math
import socket
from typing import Any, TypeVar

import psycopg
import redis
from prometheus_client import Counter

log = logging.getLogger("outbox.deadlines")

#: Seconds a client waits past the server's own statement_timeout before it gives up on the
#: connection: a slow but living server cancels its statement first (a clean error, the
#: connection kept), and only a server that does not answer at all costs a connection.
STATEMENT_GRACE = 1.0
#: Idle-in-transaction sessions the server ends, as a multiple of the call timeout: a client
#: cut off mid-transaction (its connection frozen behind a proxy) must not hold its row
#: locks until the server notices, which it never does while the proxy keeps the socket.
IDLE_IN_TRANSACTION_FACTOR = 5
#: TCP keepalives (seconds idle, seconds between probes, probes) and the time sent data may
#: stay unacknowledged (milliseconds): a peer that vanished is noticed by the kernel.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3
TCP_USER_TIMEOUT_MS = 10_000
#: libpq counts connect_timeout in whole seconds and treats anything below 2 as 2.
MIN_CONNECT_TIMEOUT = 2

STALLED_CALLS = Counter(
    "outbox_stalled_calls",
    "Database or Redis calls that missed their deadline; each connection was discarded "
    "and a replacement opened by the next call",
    ["service"],
)

RV = TypeVar("RV")

_WAIT_INTERVAL: float = getattr(psycopg.connection, "_WAIT_INTERVAL", 0.1)
_WAIT_TIMEOUT: type[Exception] = psycopg.errors._WaitTimeout


class DatabaseCallTimedOut(psycopg.OperationalError):
    """A database call got no answer within its deadline; its connection is discarded."""


def call_deadline(timeout: float) -> float:
    """Seconds the client waits for one call, for a server-side statement_timeout `timeout`."""
    return timeout + STATEMENT_GRACE


def postgres_connect_params(timeout: float) -> dict[str, Any]:
    """libpq parameters bounding connects, statements, idle transactions and dead peers.

    `timeout` is the database call timeout (DATABASE_TIMEOUT_SECONDS): the server cancels a
    statement after it, and a connect waits at most that long (libpq's minimum is 2 s).
    """
    statement_ms = round(timeout * 1000)
    return {
        "connect_timeout": max(MIN_CONNECT_TIMEOUT, math.ceil(timeout)),
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE,
        "keepalives_interval": KEEPALIVE_INTERVAL,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        "options": (
            f"-c statement_timeout={statement_ms} "
            f"-c idle_in_transaction_session_timeout={statement_ms * IDLE_IN_TRANSACTION_FACTOR}"
        ),
    }


class DeadlineConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every exchange with the server has a deadline.

    psycopg runs each exchange (a statement, a commit, a rollback, a ping) through `wait`;
    given `deadline`, its own wait gives up after that many seconds (its `timeout`
    parameter: 3.3.5's wait had none, 3.3.9's has; hence the dependency's floor). The
    connection is then in an unknown state: it is closed at once, so SQLAlchemy sees it
    broken and invalidates it instead of returning it to its pool. Set `deadline` right
    after connecting.
    """

    deadline: float | None = None

    def wait(self, gen: Any, interval: float = _WAIT_INTERVAL, timeout: float | None = None) -> Any:
        limit = self.deadline
        if limit is None or (timeout is not None and timeout <= limit):
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, limit)
        except _WAIT_TIMEOUT:
            fd = self.pgconn.socket if not self.closed else -1
            stalled("postgres", limit)
            shut_down(fd)
            self.pgconn.finish()
            raise DatabaseCallTimedOut(
                f"no answer from the database within {limit:g} s; connection discarded"
            ) from None


def stalled(service: str, deadline: float) -> None:
    """Count and log a call that missed its deadline (its connection is being discarded)."""
    STALLED_CALLS.labels(service).inc()
    log.warning(
        "%s call missed its %g s deadline; connection discarded, the next call opens a new one",
        service,
        deadline,
        extra={"service": service, "deadline_s": deadline},
    )


def shut_down(fd: int) -> None:
    """Shut down the socket under `fd` both ways, without closing the descriptor (its owner
    does): a close that would send a goodbye cannot then block on a peer that reads nothing."""
    if fd < 0:
        return
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # not connected any more: nothing to shut
        pass
    finally:
        sock.detach()


class RedisDeadlineConnection(redis.Connection):
    """redis-py's TCP connection, reporting each call that outlived the socket timeout.

    redis-py already disconnects a connection whose read or write timed out; the client's
    retry then opens a replacement. This adds the WARNING line and the count.
    """

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            super().send_packed_command(command, check_health)
        except redis.TimeoutError:
            stalled("redis", self.socket_timeout or 0)
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.TimeoutError:
            stalled("redis", self.socket_timeout or 0)
            raise
