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


def ring_processors(settings: Settings, event_ids: Sequence[int]) -> Rung:
    """Ring the processors' doorbell for `event_ids`; say so, or say the sweeper will do it."""
    sweeper = (
        f"the sweeper will pick them up (it looks every {settings.sweep_interval_seconds:g} s)"
    )
    if not event_ids:
        return Rung(False, "")
    try:
        bell = processors_doorbell(settings)
        if bell is None:
            return Rung(False, f"no processors' doorbell in this build; {sweeper}")
        ids = list(event_ids)
        for start in range(0, len(ids), MAX_IDS_PER_RING):
            bell.ring(ids[start : start + MAX_IDS_PER_RING])
    except Exception as exc:  # a broker that is down delays the work, never loses it
        return Rung(False, f"could not ring the processors ({type(exc).__name__}); {sweeper}")
    return Rung(True, f"rang the processors for {len(event_ids)} event(s)")


def processors_doorbell(settings: Settings) -> Doorbell | None:
    """The processors' Redis doorbell (the one `outbox serve` rings)."""
    from outbox.cli.run import _redis_doorbell

    return _redis_doorbell(settings)
