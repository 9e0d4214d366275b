"""The processors' bell as commands ring it: made once, rings counted, a failure not retried."""

from __future__ import annotations

from outbox.cli import ringing
from outbox.cli.ringing import ProcessorsBell
from outbox.settings import Settings


class CountingBell:
    def __init__(self, fail: bool = False) -> None:
        self.rings: list[list[int]] = []
        self.fail = fail

    def ring(self, event_ids):
        self.rings.append(list(event_ids))
        if self.fail:
            raise ConnectionError("broker down")


def test_rings_are_split_counted_and_the_doorbell_made_once(monkeypatch):
    made: list[CountingBell] = []
    monkeypatch.setattr(
        ringing, "processors_doorbell", lambda s: made.append(CountingBell()) or made[-1]
    )
    bell = ProcessorsBell(Settings())
    assert bell.ring(list(range(150))).told
    last = bell.ring([7])
    assert last.note == "rang the processors for 151 event(s)"
    assert len(made) == 1
    assert [len(r) for r in made[0].rings] == [100, 50, 1]
    assert bell.ring([]).note == last.note  # the summary, ringing nothing more


def test_after_a_failure_later_batches_do_not_try_again(monkeypatch):
    broken = CountingBell(fail=True)
    monkeypatch.setattr(ringing, "processors_doorbell", lambda s: broken)
    bell = ProcessorsBell(Settings(sweep_interval_seconds=5))
    first = bell.ring([1, 2])
    assert not first.told
    assert first.note == (
        "could not ring the processors (ConnectionError); the sweeper will pick them up "
        "(it looks every 5 s)"
    )
    assert bell.ring([3]) == first and bell.ring([]) == first
    assert broken.rings == [[1, 2]]


def test_nothing_rung_says_nothing(monkeypatch):
    monkeypatch.setattr(ringing, "processors_doorbell", lambda s: CountingBell())
    assert ProcessorsBell(Settings()).ring([]).note == ""
