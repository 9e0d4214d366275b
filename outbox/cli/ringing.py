"""Telling the processors that rows are due now, from a command (replay, reconcile).

The table is the source of truth: a ring only saves the sweeper's delay, so a broker that
cannot be reached is reported, never an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from outbox.doorbell import Doorbell
from outbox.settings import Settings

#: ids sent in one ring at most.
MAX_IDS_PER_RING = 100


@dataclass(frozen=True)
class Rung:
    """What became of a ring: whether the processors were told, in words for the operator."""

    told: bool
    note: str


class ProcessorsBell:
    """The processors' doorbell for one command: connected once, given up on after a failure.

    A bulk replay rings after every batch; once the broker has failed, later batches do not
    wait on it again (the sweeper finds every row anyway).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._bell: Doorbell | None = None
        self._failure: Rung | None = None
        self._told = 0

    def ring(self, event_ids: Sequence[int]) -> Rung:
        """Ring for `event_ids`; what the operator should read about all rings so far."""
        if not event_ids:
            return self._failure or Rung(self._told > 0, self._told_note())
        if self._failure is not None:
            return self._failure
        try:
            if self._bell is None:
                self._bell = processors_doorbell(self._settings)
            ids = list(event_ids)
            for start in range(0, len(ids), MAX_IDS_PER_RING):
                self._bell.ring(ids[start : start + MAX_IDS_PER_RING])
        except Exception as exc:  # a broker that is down delays the work, never loses it
            self._failure = Rung(
                False,
                f"could not ring the processors ({type(exc).__name__}); the sweeper will pick "
                f"them up (it looks every {self._settings.sweep_interval_seconds:g} s)",
            )
            return self._failure
        self._told += len(event_ids)
        return Rung(True, self._told_note())

    def _told_note(self) -> str:
        return f"rang the processors for {self._told} event(s)" if self._told else ""


def processors_doorbell(settings: Settings) -> Doorbell:
    """The processors' Redis doorbell (the one `outbox serve` rings)."""
    from outbox.cli.run import _redis_doorbell

    return _redis_doorbell(settings)
