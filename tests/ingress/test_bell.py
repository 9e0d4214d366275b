"""The coalescing bell: rings leave the request path, rows committed together go out in one
ring, and a failing broker is not hammered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from ingress import bell as bell_module
from ingress.bell import CoalescingBell
from tests.ingress.conftest import RecordingDoorbell


class CountingDoorbell(RecordingDoorbell):
    def __init__(self, fail: bool) -> None:
        super().__init__(fail=fail)
        self.attempts = 0

    def ring(self, event_ids):  # type: ignore[no-untyped-def]
        self.attempts += 1
        super().ring(event_ids)


class LoopRecordingDoorbell:
    """A loop doorbell whose ring takes `latency` seconds, like a Redis round trip."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.rings: list[list[int]] = []
        self.closed = False

    async def ring(self, event_ids: Sequence[int]) -> None:
        await asyncio.sleep(self.latency)
        self.rings.append(list(event_ids))

    async def close(self) -> None:
        self.closed = True


def test_rows_committed_while_a_ring_is_in_flight_go_out_in_one_ring():
    doorbell = LoopRecordingDoorbell(latency=0.05)

    async def scenario() -> None:
        bell = CoalescingBell(doorbell)
        bell.start()
        bell.ring_later([0])
        await asyncio.sleep(0.01)  # the first ring is in flight
        for n in range(1, 200):
            bell.ring_later([n])
        await asyncio.sleep(0.2)
        await bell.stop()

    asyncio.run(scenario())
    assert doorbell.rings == [[0], list(range(1, 200))]
    assert doorbell.closed


def test_a_lone_commit_rings_at_once():
    doorbell = LoopRecordingDoorbell()

    async def scenario() -> float:
        bell = CoalescingBell(doorbell)
        bell.start()
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        bell.ring_later([7, 7, 3])
        while not doorbell.rings:
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - started
        await bell.stop()
        return elapsed

    assert asyncio.run(scenario()) < 0.01
    assert doorbell.rings == [[3, 7]]


def test_a_blocking_doorbell_is_rung_off_the_loop():
    doorbell = CountingDoorbell(fail=False)

    async def scenario() -> None:
        bell = CoalescingBell(doorbell)
        bell.start()
        for n in range(20):
            bell.ring_later([n])
        await asyncio.sleep(0.1)
        await bell.stop()

    asyncio.run(scenario())
    assert doorbell.rung_ids() == set(range(20))
    assert doorbell.attempts == 1


def test_after_a_failure_the_bell_rests_instead_of_retrying_at_every_batch(monkeypatch):
    monkeypatch.setattr(bell_module, "REST_AFTER_FAILURE", 0.5)
    doorbell = CountingDoorbell(fail=True)

    async def scenario() -> None:
        bell = CoalescingBell(doorbell)
        bell.start()
        for n in range(50):
            bell.ring_later([n])
            await asyncio.sleep(0.005)
        attempts = doorbell.attempts
        await bell.stop()
        assert attempts <= 2

    asyncio.run(scenario())


@pytest.mark.parametrize("fail", [True, False])
def test_stop_returns_promptly_even_while_resting(monkeypatch, fail):
    monkeypatch.setattr(bell_module, "REST_AFTER_FAILURE", 30.0)

    async def scenario() -> float:
        bell = CoalescingBell(CountingDoorbell(fail=fail))
        bell.start()
        bell.ring_later([1])
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await bell.stop()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 3


def test_past_the_waiting_cap_rings_are_dropped_and_counted(monkeypatch):
    monkeypatch.setattr(bell_module, "MAX_WAITING", 10)
    from ingress.metrics import DOORBELL_FAILURES

    before = DOORBELL_FAILURES._value.get()
    bell = CoalescingBell(LoopRecordingDoorbell())  # not started: nothing is sent
    for n in range(15):
        bell.ring_later([n])
    assert DOORBELL_FAILURES._value.get() - before == 5
