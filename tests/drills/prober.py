"""The service behind a fault proxy, and a prober that sends a signed webhook every 250 ms.

`stand(...)` starts an ingress, one worker process and a sweeper (`outbox serve`, `worker`,
`sweep`) whose DATABASE_URL and REDIS_URL may point through `FaultProxy`s; the events are
the processors tests' `test.effect`, applied by `batch_handler_table` (an effect row per
event, with the pid that applied it).

`Prober` sends from its own threads, one webhook per TICK, each waiting up to
SENDER_TIMEOUT for its answer, and keeps every answer with its times; `Probe`s tell what a
drill measures: the slowest answer, 2xx answers without a row, when the answers turned 2xx
again after a fault, and when every stored row was final.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, select

from outbox.models import Status, WebhookEvent
from tests.conftest import GITHUB_SECRET
from tests.factories import github_headers
from tests.processors.handlers import TEST_EVENT_TYPE, create_effects_table, effects
from tests.services import WORKER_READY, OutboxProcess, free_port, outbox_env, start_for

TICK = 0.25  #: seconds between two probes
SENDER_TIMEOUT = 30.0  #: seconds a probe waits for its answer (a provider's patience)
LEASE = 5  #: seconds: LEASE_SECONDS of the drills' processors
FINAL = (Status.DONE.value, Status.SKIPPED.value, Status.DEAD.value)


@dataclass
class Probe:
    delivery: str
    sent: float  #: time.monotonic()
    answered: float | None = None
    status: int | None = None  #: None: no answer (connection error or the sender's timeout)

    @property
    def took(self) -> float:
        return (self.answered or time.monotonic()) - self.sent

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Prober:
    """Sends a signed `test.effect` webhook every TICK until stopped, each from a thread."""

    url: str
    probes: list[Probe] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        runner = threading.Thread(target=self._run, daemon=True)
        runner.start()
        self._threads.append(runner)

    def stop(self) -> list[Probe]:
        """Stop sending, wait for every answer (each bounded by SENDER_TIMEOUT)."""
        self._stop.set()
        self._threads[0].join(SENDER_TIMEOUT)  # the runner: no probe is started after it
        for thread in self._threads[1:]:
            thread.join(SENDER_TIMEOUT + 5)
        return self.probes

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            probe = Probe(f"probe-{uuid.uuid4().hex[:12]}", time.monotonic())
            self.probes.append(probe)
            sender = threading.Thread(target=self._send, args=(probe,), daemon=True)
            sender.start()
            self._threads.append(sender)
            next_at += TICK
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _send(self, probe: Probe) -> None:
        body = json.dumps({"id": probe.delivery, "type": TEST_EVENT_TYPE, "test": {}}).encode()
        headers = github_headers(body, TEST_EVENT_TYPE, delivery=probe.delivery)
        try:
            response = httpx.post(
                f"{self.url}/webhooks/github", content=body, headers=headers,
                timeout=SENDER_TIMEOUT,
            )  # fmt: skip
            probe.status = response.status_code
        except httpx.HTTPError:
            probe.status = None
        probe.answered = time.monotonic()


@dataclass
class Figures:
    """What a drill measured, for its assertions and its report."""

    probes: int
    answered_2xx: int
    answered_503: int
    slowest: float  #: seconds
    slowest_delivery: str
    unstored_2xx: list[str]
    recovered_after: float | None  #: seconds from the fault's end to the 2xx that stayed
    final_after: float | None = None  #: seconds from the fault's end until every row was final

    def line(self, name: str) -> str:
        return (
            f"{name}: {self.probes} probes, {self.answered_2xx} 2xx, {self.answered_503} 503, "
            f"slowest {self.slowest:.2f} s, 2xx without a row {len(self.unstored_2xx)}, "
            f"2xx again {_seconds(self.recovered_after)} after, every row final "
            f"{_seconds(self.final_after)} after"
        )


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def figures(probes: list[Probe], engine: Engine, fault_ended: float) -> Figures:
    stored = stored_deliveries(engine)
    return Figures(
        probes=len(probes),
        answered_2xx=sum(p.ok for p in probes),
        answered_503=sum(p.status == 503 for p in probes),
        slowest=max(p.took for p in probes),
        slowest_delivery=max(probes, key=lambda p: p.took).delivery,
        unstored_2xx=[p.delivery for p in probes if p.ok and p.delivery not in stored],
        recovered_after=recovered_after(probes, fault_ended),
    )


def recovered_after(probes: list[Probe], fault_ended: float) -> float | None:
    """Seconds from `fault_ended` to the answer of the first probe from which on every probe
    sent after the fault was answered 2xx (None: the answers never stayed 2xx)."""
    after = sorted((p for p in probes if p.sent >= fault_ended), key=lambda p: p.sent)
    first_of_the_rest: Probe | None = None
    for probe in after:
        if not probe.ok:
            first_of_the_rest = None
        elif first_of_the_rest is None:
            first_of_the_rest = probe
    if first_of_the_rest is None or first_of_the_rest.answered is None:
        return None
    return first_of_the_rest.answered - fault_ended


def stored_deliveries(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(select(WebhookEvent.delivery_id)))


def unfinished(engine: Engine) -> int:
    with engine.connect() as conn:
        statuses = list(conn.scalars(select(WebhookEvent.status)))
    return sum(status not in FINAL for status in statuses)


def wait_until_final(engine: Engine, since: float, limit: float) -> float | None:
    """Seconds from `since` until every stored row is final; None if not within `limit`."""
    while time.monotonic() - since < limit:
        try:
            if unfinished(engine) == 0:
                return time.monotonic() - since
        except Exception:  # the database itself may still be coming back
            pass
        time.sleep(0.2)
    return None


def applied_by(engine: Engine) -> dict[int, int]:
    """event id -> pid of the process that applied it."""
    with engine.connect() as conn:
        return {int(e): int(p) for e, p in conn.execute(select(effects.c.event_id, effects.c.pid))}


@dataclass
class Stand:
    url: str  #: the ingress's base URL
    ingress: OutboxProcess
    worker: OutboxProcess
    sweeper: OutboxProcess | None

    def logs(self) -> str:
        parts = [self.ingress, self.worker, *([self.sweeper] if self.sweeper else [])]
        return "\n".join(p.output() for p in parts)


@contextmanager
def stand(
    database_url: str, redis_url: str, tmp: Path, *, direct_url: str, sweeper: bool = True,
    **settings: object,
) -> Iterator[Stand]:  # fmt: skip
    """The service on `database_url` and `redis_url` (maybe through proxies); `direct_url`
    reaches the same database without a proxy, for setting it up."""
    direct = create_engine(direct_url)
    try:
        create_effects_table(direct)
    finally:
        direct.dispose()
    env = outbox_env(
        database_url,
        redis_url=redis_url,
        handler_table="tests.processors.handlers:batch_handler_table",
        github_webhook_secret=GITHUB_SECRET,
        lease_seconds=LEASE,
        retry_base_seconds=0.2,
        retry_max_delay_seconds=1,
        sweep_interval_seconds=0.5,
        **settings,
    )
    port = free_port()
    with ExitStack() as stack:
        # The worker and sweeper start side by side while the ingress does.
        worker = start_for(stack, OutboxProcess(["worker", "-p", "1", "-t", "2"], env,
                                                log_dir=tmp))  # fmt: skip
        sweep = start_for(stack, OutboxProcess(["sweep"], env, log_dir=tmp)) if sweeper else None
        ingress = start_for(
            stack, OutboxProcess(["serve", "--port", str(port)], env, port=port, log_dir=tmp)
        )
        worker.wait_for_output(WORKER_READY, timeout=60)
        yield Stand(f"http://127.0.0.1:{port}", ingress, worker, sweep)


def probe_through(stand_: Stand, engine: Engine, fault: object, *, before: float,
                  during: float, after: float) -> tuple[list[Probe], float]:  # fmt: skip
    """Probe `before` seconds, run `fault()` (it returns once the fault is over, after
    `during` seconds of it), probe `after` more; the probes and when the fault ended."""
    wait_for_a_2xx(stand_.url)
    prober = Prober(stand_.url)
    prober.start()
    time.sleep(before)
    fault(during)  # type: ignore[operator]
    ended = time.monotonic()
    time.sleep(after)
    return prober.stop(), ended


def wait_for_a_2xx(url: str, limit: float = 30.0) -> None:
    """Until the ingress stores a webhook (the stand is up and its connections made)."""
    deadline = time.monotonic() + limit
    while True:
        probe = Probe(f"warm-{uuid.uuid4().hex[:8]}", time.monotonic())
        Prober(url)._send(probe)
        if probe.ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the ingress never stored a webhook (last: {probe.status})")
        time.sleep(0.2)
