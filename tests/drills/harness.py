"""One drill: the whole service as real OS processes against a fake GitHub and Stripe.

`Drill` starts an ingress (`outbox serve`), two worker processes (`outbox worker -p 1`, so
one can be killed while the other works) and a sweeper, all on one database and a private
redis-server, with the App's key and both API bases pointing at `FakeProviders`. `run()`
delivers the scenario while a fault runs beside it, waits until everything is finished,
and `check()` compares the end state with what the events call for.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, select

from domain import balances
from domain.jobs import JobStatus, PrJob, submit
from domain.packs import load_packs, read_pack_file
from domain.subscriptions import Subscription
from domain.usage import UsageRecord
from outbox.db import make_sessionmaker, transaction, utcnow
from outbox.models import Status, WebhookEvent
from tests.domain.billing_support import SEED_PACKS
from tests.drills.scenario import Scenario, Secrets, Sender
from tests.fakes.github import throwaway_private_key
from tests.fakes.providers import FakeProviders
from tests.services import (
    WORKER_READY,
    OutboxProcess,
    RedisServer,
    free_port,
    outbox_env,
    start_for,
)

SECRETS = Secrets(github="drill-github-secret", stripe="whsec_drill_secret")
FINISH_TIMEOUT = 120.0  #: seconds the service may take to finish everything after sending
POLL = 0.5  #: seconds between two looks at the tables

#: A fault runs in a thread beside the sender until `stop` is set; it gets the drill.
Fault = Callable[["Drill", threading.Event], None]


@dataclass
class Drill:
    url: str
    redis: RedisServer
    fake: FakeProviders
    env: dict[str, str]
    ingress: OutboxProcess
    workers: list[OutboxProcess]
    engine: Engine
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    faults_done: list[str] = field(default_factory=list)

    def restart_worker(self, worker: OutboxProcess) -> None:
        ready_before = worker.output().count(WORKER_READY)
        worker.start()
        worker.wait_for_output(WORKER_READY, count=ready_before + 1, timeout=60)

    # --- running ------------------------------------------------------------------------

    def run(self, scenario: Scenario, fault: Fault | None, seed: int) -> Sender:
        sender = Sender(f"http://127.0.0.1:{self.ingress.port}", SECRETS, seed)
        sender.send_all(scenario.installations)
        self.wait_for(lambda: self._unfinished_events() == 0, "installations applied")
        self._submit_jobs(scenario)
        stop = threading.Event()
        faulting = threading.Thread(target=fault, args=(self, stop)) if fault else None
        if faulting:
            faulting.start()
        try:
            sender.send_all(scenario.stripe)
            self.wait_for(self._all_finished, "every event, job and usage report finished")
        finally:
            stop.set()
            if faulting:
                faulting.join(120)
        self.wait_for(self._all_finished, "everything finished after the fault")
        return sender

    def _submit_jobs(self, scenario: Scenario) -> None:
        sessions = make_sessionmaker(self.engine)
        with transaction(sessions) as session:
            # The operator's pack catalog, configured before any purchase arrives.
            load_packs(session, read_pack_file(SEED_PACKS), now=utcnow())
            for spec in scenario.jobs:
                submit(session, spec, now=utcnow())

    def wait_for(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + FINISH_TIMEOUT
        while True:
            try:
                if check():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.progress()}")
            time.sleep(POLL)

    def _unfinished_events(self) -> int:
        with self.engine.connect() as conn:
            query = select(func.count()).where(
                WebhookEvent.status.in_([Status.PENDING.value, Status.PROCESSING.value])
            )
            return int(conn.scalar(query) or 0)

    def _all_finished(self) -> bool:
        with self.engine.connect() as conn:
            open_jobs = conn.scalar(
                select(func.count()).where(
                    PrJob.status.not_in([JobStatus.SUCCESS.value, JobStatus.FAILED.value])
                )
            )
            unreported = conn.scalar(select(func.count()).where(UsageRecord.reported_at.is_(None)))
        return self._unfinished_events() == 0 and open_jobs == 0 and unreported == 0

    def progress(self) -> str:
        try:
            with self.engine.connect() as conn:
                events = dict(conn.execute(
                    select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)
                ).all())  # fmt: skip
                jobs = dict(
                    conn.execute(select(PrJob.status, func.count()).group_by(PrJob.status)).all()
                )
                errors = list(conn.scalars(
                    select(WebhookEvent.last_error).where(WebhookEvent.last_error.is_not(None))
                    .limit(3)
                ))  # fmt: skip
            return f"events {events}, jobs {jobs}, faults {self.faults_done}, errors {errors}"
        except Exception as exc:
            return f"(database unreachable: {exc})"

    # --- checking -----------------------------------------------------------------------

    def check(self, scenario: Scenario, sender: Sender) -> None:
        """Zero lost, zero doubled: every figure exactly what the events call for."""
        assert sender.refused == [] and sender.undelivered == [], (
            sender.refused[:5], sender.undelivered[:5])  # fmt: skip
        sessions = make_sessionmaker(self.engine)
        with sessions() as session:
            statuses = dict(session.execute(
                select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)
            ).all())  # fmt: skip
            stored = set(session.scalars(select(WebhookEvent.delivery_id)))
            sent = {d.delivery_id for d in scenario.installations + scenario.stripe}
            assert sent - stored == set(), "answered 2xx but not stored"
            assert statuses == {Status.DONE.value: scenario.deliveries}, statuses
            balance_of = {a: balances.balance(session, a) for a in scenario.balances}
            debts = {a: balances.debt(session, a) for a in scenario.balances}
            jobs = collections.Counter(session.scalars(select(PrJob.status)))
            subs = dict(session.execute(select(Subscription.id, Subscription.status)).all())
            usage_keys = set(session.scalars(select(UsageRecord.key)))
            charged = list(session.scalars(select(PrJob.id).where(PrJob.required_credits > 0)))
        assert balance_of == scenario.balances
        assert set(debts.values()) == {Decimal(0)}
        assert jobs == {JobStatus.SUCCESS.value: scenario.expected_pull_requests}
        assert subs == scenario.subscription_status
        by_head = self.fake.github.pull_requests_by_head()
        assert sum(by_head.values()) == scenario.expected_pull_requests
        assert set(by_head.values()) == {1}, "a pull request opened twice"
        expected_meter = {f"usage:pr_job:{job_id}" for job_id in charged}
        assert usage_keys == {f"pr_job:{job_id}" for job_id in charged}
        assert dict(self.fake.stripe.accepted) == dict.fromkeys(expected_meter, 1)


@contextmanager
def drill(url: str, scenario: Scenario, tmp: Path) -> Iterator[Drill]:
    """The service on database `url`, the fake providers loaded with the scenario's objects."""
    with ExitStack() as stack:
        fake = stack.enter_context(FakeProviders())
        for repo in scenario.repositories:
            fake.github.add_repo(repo)
        for session_obj, items in scenario.checkout_sessions:
            fake.stripe.add_checkout_session(session_obj, items)
        fake.stripe.subscriptions.update(scenario.subscriptions)
        redis = stack.enter_context(RedisServer())
        key_file = tmp / "app.pem"
        key_file.write_text(throwaway_private_key())
        env = outbox_env(
            url,
            redis_url=redis.url,
            github_webhook_secret=SECRETS.github,
            stripe_webhook_secret=SECRETS.stripe,
            stripe_mode="any",
            stripe_api_key="sk_test_drill",
            stripe_api_base=fake.url,
            github_app_id="31337",
            github_app_private_key_file=key_file,
            github_api_url=fake.url,
            onboarding_pr_enabled="true",
            welcome_credits=50,
            # Short, so that a killed worker's rows come back within the drill; long enough
            # that a pass slowed by a loaded 2-core machine keeps its lease (with leases of a
            # few seconds, passes take rows from each other over and over and never finish).
            lease_seconds=10,
            retry_base_seconds=0.2,
            retry_max_delay_seconds=2,
            retry_max_attempts=500,
            sweep_interval_seconds=0.5,
        )
        port = free_port()
        workers = [OutboxProcess(["worker", "-p", "1", "-t", "4"], env, log_dir=tmp)
                   for _ in range(2)]  # fmt: skip
        sweeper = OutboxProcess(["sweep"], env, log_dir=tmp)
        for process in [*workers, sweeper]:  # they start side by side while the ingress does
            start_for(stack, process)
        ingress = start_for(stack, OutboxProcess(["serve", "--port", str(port)], env, port=port,
                                               log_dir=tmp))  # fmt: skip
        for worker in workers:
            worker.wait_for_output(WORKER_READY, timeout=60)
        engine = create_engine(url, pool_pre_ping=True)
        stack.callback(engine.dispose)
        yield Drill(url, redis, fake, env, ingress, workers, engine)
