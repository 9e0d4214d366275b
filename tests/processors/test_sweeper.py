"""The sweeper pass: expired leases come back, due rows are rung again, other areas' sources too."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from outbox import claiming, recovery
from outbox.db import transaction, utcnow
from outbox.models import Status, WebhookEvent
from processors import sweeper
from processors.sweeper import SweepSource, sweep_once
from tests.factories import record
from tests.processors.handlers import effect_counts, scripted_event


class Ringer:
    def __init__(self, fail: bool = False) -> None:
        self.rung: list[int] = []
        self.fail = fail

    def __call__(self, ids: list[int]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.rung += ids


def events_source(ringer: Ringer) -> SweepSource:
    return SweepSource(
        "webhook_events",
        find_due=lambda session, now, limit: recovery.due_ids(session, now=now, limit=limit),
        enqueue=ringer,
    )


def test_a_pass_rings_every_due_row_and_leaves_the_others(runtime):
    due, later = (r.id for r in record(runtime.engine, scripted_event(), scripted_event()))
    with transaction(runtime.sessions) as session:
        session.get_one(WebhookEvent, later).next_attempt_at = utcnow() + timedelta(hours=1)
    ringer = Ringer()
    report = sweep_once(runtime, sources=[events_source(ringer)])
    assert ringer.rung == [due]
    assert report.rung == {"webhook_events": 1} and report.released == 0 and report.ok


def test_a_pass_gives_back_rows_whose_lease_ran_out(runtime):
    [event_id] = (r.id for r in record(runtime.engine, scripted_event()))
    with transaction(runtime.sessions) as session:
        assert claiming.claim(session, now=utcnow(), lease=timedelta(seconds=-1), ids=[event_id])
    ringer = Ringer()
    report = sweep_once(runtime, sources=[events_source(ringer)])
    assert report.released == 1 and ringer.rung == [event_id]
    with runtime.sessions() as session:
        back = session.get_one(WebhookEvent, event_id)
    assert back.status == Status.PENDING and back.lease_owner is None
    assert back.last_error == "worker died or lease expired 1 time while applying it"


def test_a_broker_that_is_down_fails_its_step_only(runtime):
    record(runtime.engine, scripted_event())
    jobs = Ringer()
    jobs_source = SweepSource("pr_jobs", find_due=lambda s, now, limit: [7, 8], enqueue=jobs)
    report = sweep_once(runtime, sources=[events_source(Ringer(fail=True)), jobs_source])
    assert report.errors == {"webhook_events": "ConnectionError: broker down"}
    assert not report.ok and jobs.rung == [7, 8] and report.rung == {"pr_jobs": 2}
    assert "webhook_events failed: ConnectionError: broker down" in report.summary()


def test_registered_sources_include_the_events_and_any_other_area(runtime):
    jobs = Ringer()
    sweeper.register_sweep_source(
        SweepSource("test_jobs", find_due=lambda s, now, limit: [1], enqueue=jobs)
    )
    try:
        names = [s.name for s in sweeper.registered_sweep_sources()]
        assert "webhook_events" in names and "test_jobs" in names
    finally:
        sweeper._sources.pop("test_jobs")


def test_the_events_source_leaves_just_received_rows_to_the_ingress_ring(runtime):
    from processors.event_actor import RING_GRACE_SECONDS, _due_events

    # Times are given, not read from the clock, so a slow machine cannot age the fresh row.
    now = utcnow()
    old = now - timedelta(minutes=1)
    [fresh] = (r.id for r in record(runtime.engine, scripted_event(), now=now))
    [retried, replayed] = (
        r.id for r in record(runtime.engine, scripted_event(), scripted_event(), now=old)
    )
    with transaction(runtime.sessions) as session:
        session.get_one(WebhookEvent, retried).attempts = 1
        session.get_one(WebhookEvent, replayed).next_attempt_at = now  # attempts stay 0
        session.get_one(WebhookEvent, fresh).next_attempt_at = old
    grace = min(RING_GRACE_SECONDS, runtime.settings.sweep_interval_seconds)
    with runtime.sessions() as session:
        due = _due_events(session, now + timedelta(seconds=grace / 2), 100)
    assert sorted(due) == sorted([retried, replayed])


def test_with_the_broker_down_the_sweeper_applies_due_events_itself(runtime):
    from processors.event_actor import _apply_here

    ids = [r.id for r in record(runtime.engine, scripted_event(), scripted_event())]
    source = SweepSource(
        "webhook_events",
        find_due=lambda session, now, limit: recovery.due_ids(session, now=now, limit=limit),
        enqueue=Ringer(fail=True),
        work_here=_apply_here,
    )
    report = sweep_once(runtime, sources=[source])
    assert report.errors == {"webhook_events": "ConnectionError: broker down"}
    assert report.worked_here == {"webhook_events": 2}
    assert "worked 2 webhook_events here" in report.summary()
    assert effect_counts(runtime.engine) == dict.fromkeys(ids, 1)
    with runtime.sessions() as session:
        assert {session.get_one(WebhookEvent, i).status for i in ids} == {Status.DONE}


def test_a_source_whose_lookup_fails_fails_its_step_only_even_with_work_here(runtime):
    def unreachable(session, now, limit):  # type: ignore[no-untyped-def]
        raise ConnectionError("database down")

    def never(runtime_, ids):  # type: ignore[no-untyped-def]
        raise AssertionError("nothing was found, so nothing is worked here")

    source = SweepSource("webhook_events", find_due=unreachable, enqueue=Ringer(), work_here=never)
    report = sweep_once(runtime, sources=[source])
    assert report.errors == {"webhook_events": "ConnectionError: database down"}
    assert report.worked_here == {}


class FollowedRinger:
    """A source's broker side as the sweeper sees it: rings are out until taken."""

    def __init__(self) -> None:
        self.rings: list[sweeper.Ring] = []
        self.taken: set[str] = set()

    def enqueue(self, ids: list[int]) -> list[sweeper.Ring]:
        ring = sweeper.Ring(f"m{len(self.rings)}", list(ids))
        self.rings.append(ring)
        return [ring]

    def out(self, message_ids: list[str]) -> set[str]:
        return {m for m in message_ids if m not in self.taken}

    def source(self) -> SweepSource:
        return SweepSource(
            "webhook_events",
            find_due=lambda session, now, limit: recovery.due_ids(session, now=now, limit=limit),
            enqueue=self.enqueue,
            rings_out=self.out,
        )


def test_a_row_named_by_a_ring_still_out_is_not_rung_again(runtime):
    first = [r.id for r in record(runtime.engine, scripted_event(), scripted_event())]
    ringer = FollowedRinger()
    ledger = sweeper.RingLedger()
    sweep_once(runtime, sources=[ringer.source()], ledger=ledger)
    later = [r.id for r in record(runtime.engine, scripted_event())]
    sweep_once(runtime, sources=[ringer.source()], ledger=ledger)
    sweep_once(runtime, sources=[ringer.source()], ledger=ledger)
    assert [list(r.ids) for r in ringer.rings] == [first, later]
    ringer.taken.add("m0")  # a worker took the first ring and the rows are still due
    sweep_once(runtime, sources=[ringer.source()], ledger=ledger)
    assert list(ringer.rings[-1].ids) == first


def test_a_pass_tops_rows_out_up_to_the_bound_and_no_further(runtime, monkeypatch):
    monkeypatch.setattr(sweeper, "RUNG_OUT_MAX", 3)
    ids = [r.id for r in record(runtime.engine, *(scripted_event() for _ in range(5)))]
    ringer = FollowedRinger()
    ledger = sweeper.RingLedger()
    for _ in range(3):
        sweep_once(runtime, sources=[ringer.source()], limit=1, ledger=ledger)
    assert [list(r.ids) for r in ringer.rings] == [ids[:3]]
    with transaction(runtime.sessions) as session:  # a worker took the ring and did two
        for event_id in ids[:2]:
            session.get_one(WebhookEvent, event_id).status = Status.DONE
    ringer.taken.add("m0")
    sweep_once(runtime, sources=[ringer.source()], limit=1, ledger=ledger)
    assert [list(r.ids) for r in ringer.rings] == [ids[:3], ids[2:5]]


def test_released_leases_make_the_sweeper_forget_its_rings(runtime):
    ids = [r.id for r in record(runtime.engine, scripted_event(), scripted_event())]
    ringer = FollowedRinger()
    ledger = sweeper.RingLedger()
    sweep_once(runtime, sources=[ringer.source()], ledger=ledger)
    with transaction(runtime.sessions) as session:  # a worker took the second and died
        assert claiming.claim(session, now=utcnow(), lease=timedelta(seconds=-1), ids=[ids[1]])
    sweep_once(runtime, sources=[ringer.source()], ledger=ledger)
    assert [list(r.ids) for r in ringer.rings] == [ids, ids]


@pytest.mark.redis
def test_with_no_worker_the_events_queue_names_each_due_row_once(runtime, redis_url):
    from processors.broker import setup_broker
    from processors.event_actor import IDS_PER_MESSAGE, QUEUE, RING_GRACE_SECONDS

    broker = setup_broker(runtime.settings, in_process=False)
    try:
        ids = [r.id for r in record(runtime.engine, *(scripted_event() for _ in range(120)))]
        sources = [s for s in sweeper.registered_sweep_sources() if s.name == "webhook_events"]
        time.sleep(RING_GRACE_SECONDS * 2)  # past the grace the ingress's own ring gets
        ledger = sweeper.RingLedger()
        for _ in range(4):
            sweep_once(runtime, sources=sources, ledger=ledger)
        client, queue = broker.client, f"{runtime.settings.redis_namespace}:{QUEUE}"  # type: ignore[attr-defined]
        messages = [json.loads(m) for m in client.hvals(f"{queue}.msgs")]
        named = sorted(i for m in messages for i in m["args"][0])
        assert named == ids
        assert client.llen(queue) == -(-120 // IDS_PER_MESSAGE)
        broker.flush(QUEUE)  # the workers took them all, the rows are still due
        sweep_once(runtime, sources=sources, ledger=ledger)
        assert client.llen(queue) == -(-120 // IDS_PER_MESSAGE)
    finally:
        broker.flush_all()
        broker.close()


@pytest.mark.parametrize("database_url", ["postgres", "sqlite"], indirect=True)
def test_the_sweeper_makes_the_partitions_ahead_and_has_nothing_to_do_on_sqlite(runtime):
    from dataclasses import replace

    from outbox.partitions import interval_start, list_partitions, partition_name

    def partitions() -> set[str]:
        with runtime.engine.connect() as conn:
            return {p.name for p in list_partitions(conn)}

    before = partitions()
    ahead = replace(runtime, settings=runtime.settings.model_copy(update={"partitions_ahead": 6}))
    sweeper.upkeep_partitions(ahead)
    made = partitions() - before
    if runtime.engine.dialect.name == "sqlite":
        assert before == made == set()
        return
    day = timedelta(days=1)
    assert partition_name(interval_start(utcnow() + 6 * day, day), day) in made
    with runtime.engine.begin() as conn:  # the other tests' database keeps its layout
        for name in made:
            conn.exec_driver_sql(f"DROP TABLE {name}")
