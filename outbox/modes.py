"""Which Stripe mode's events this deployment applies (`STRIPE_MODE`).

The ingress stores an event of the other mode as `skipped`; the processors check again,
so an event replayed or stored under another setting is still never applied.
"""

from __future__ import annotations

from outbox.settings import StripeMode


def mode_mismatch(livemode: bool | None, mode: StripeMode) -> str | None:
    """Why an event of this mode must never be applied here, or None when it may be."""
    if mode == "any":
        return None
    if livemode is None:
        return f"event has no livemode; STRIPE_MODE={mode}"
    if livemode != (mode == "live"):
        return f"{'live' if livemode else 'test'}-mode event; STRIPE_MODE={mode}"
    return None
