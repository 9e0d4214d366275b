"""The retry policy: the one place that decides when a failed row is tried again, and when never."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from outbox.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped, for a bounded number of attempts.

    :param base_seconds: delay after the first failure.
    :param max_delay_seconds: no delay is ever longer than this.
    :param max_attempts: after this many attempts a row is dead.
    :param jitter: each delay is spread by +/- this fraction, so rows that failed
        together (a provider outage) do not all come back in the same second.

    The defaults (10 s doubling to a 2 h cap, 20 attempts) give up after about a day.
    """

    base_seconds: float = 10.0
    max_delay_seconds: float = 7200.0
    max_attempts: int = 20
    jitter: float = 0.25

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            base_seconds=settings.retry_base_seconds,
            max_delay_seconds=settings.retry_max_delay_seconds,
            max_attempts=settings.retry_max_attempts,
        )

    def nominal_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based), before jitter."""
        exponent = min(max(attempt - 1, 0), 62)
        return float(min(self.base_seconds * (2**exponent), self.max_delay_seconds))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> timedelta:
        spread = 1.0 + self.jitter * (2.0 * rand() - 1.0)
        return timedelta(seconds=self.nominal_delay(attempt) * spread)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def total_span(self) -> timedelta:
        """How long a row that always fails is retried, before jitter."""
        seconds = sum(self.nominal_delay(n) for n in range(1, self.max_attempts))
        return timedelta(seconds=seconds)
