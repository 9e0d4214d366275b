"""The background bell: rings leave the request path, and a failing broker is not hammered."""

from __future__ import annotations

import time

import pytest

from ingress import bell as bell_module
from ingress.bell import BackgroundBell
from tests.ingress.conftest import RecordingDoorbell


class CountingDoorbell(RecordingDoorbell):
    def __init__(self, fail: bool) -> None:
        super().__init__(fail=fail)
        self.attempts = 0

    def ring(self, event_ids):  # type: ignore[no-untyped-def]
        self.attempts += 1
        super().ring(event_ids)


def test_rings_queued_together_are_sent_together():
    doorbell = CountingDoorbell(fail=False)
    bell = BackgroundBell(doorbell)
    for n in range(20):
        bell.ring_later([n])
    bell.start()
    try:
        assert doorbell.rung_ids() == set(range(20))
    finally:
        bell.stop()
    assert doorbell.attempts == 1


def test_after_a_failure_the_bell_rests_instead_of_retrying_at_every_batch(monkeypatch):
    monkeypatch.setattr(bell_module, "REST_AFTER_FAILURE", 0.5)
    doorbell = CountingDoorbell(fail=True)
    bell = BackgroundBell(doorbell)
    bell.start()
    try:
        for n in range(50):
            bell.ring_later([n])
            time.sleep(0.005)
        assert doorbell.attempts <= 2
    finally:
        bell.stop()


@pytest.mark.parametrize("fail", [True, False])
def test_stop_returns_promptly_even_while_resting(monkeypatch, fail):
    monkeypatch.setattr(bell_module, "REST_AFTER_FAILURE", 30.0)
    bell = BackgroundBell(CountingDoorbell(fail=fail))
    bell.start()
    bell.ring_later([1])
    time.sleep(0.05)
    started = time.monotonic()
    bell.stop()
    assert time.monotonic() - started < 2
