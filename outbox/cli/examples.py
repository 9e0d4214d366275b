"""The webhook examples `outbox send` knows by name, and telling a GitHub file's event.

The payloads are package data (`outbox/examples/`, see its SOURCE.md), so they are there in
an installed package as in a clone. GitHub examples keep the upstream layout
`github/<event>/<action>.payload.json`; Stripe's are API objects that `outbox send` puts in
an Event of the type asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: The Stripe event types with a built-in example, and the object each one carries.
STRIPE_EVENT_OBJECTS = {
    "checkout.session.completed": "checkout.session",
    "checkout.session.async_payment_succeeded": "checkout.session",
    "customer.subscription.created": "subscription",
    "customer.subscription.updated": "subscription",
    "customer.subscription.deleted": "subscription",
    "invoice.paid": "invoice",
    "invoice.payment_failed": "invoice",
    "customer.created": "customer",
    "payment_intent.succeeded": "payment_intent",
}
#: Built-in Stripe examples that are already whole Events, sent as they are.
STRIPE_EVENTS = {"plan.created": "event"}

GITHUB_SUFFIX = ".payload.json"


@dataclass(frozen=True)
class Example:
    """A payload `outbox send` can post: its file and what it is sent as."""

    name: str  #: how the user names it: `pull_request.opened`, `invoice.paid`
    path: Path
    github_event: str | None = None  #: the X-GitHub-Event header
    stripe_type: str | None = None  #: the Event type an API object is wrapped in


def built_in(provider: str) -> dict[str, Example]:
    """The provider's built-in examples by name, in name order."""
    if provider == "github":
        examples = [_github_example(path) for path in (EXAMPLES / "github").glob("*/*.json")]
    else:
        stripe = EXAMPLES / "stripe"
        examples = [
            Example(name, stripe / f"{obj}.json", stripe_type=name)
            for name, obj in STRIPE_EVENT_OBJECTS.items()
        ] + [Example(name, stripe / f"{obj}.json") for name, obj in STRIPE_EVENTS.items()]
    return {example.name: example for example in sorted(examples, key=lambda e: e.name)}


def _github_example(path: Path) -> Example:
    event = path.parent.name
    action = path.name.removesuffix(GITHUB_SUFFIX)
    name = event if path.name == "payload.json" else f"{event}.{action}"
    return Example(name, path, github_event=event)


def github_event_of(path: Path) -> str | None:
    """The event a file's place names, in the layout `github/<event>/<file>`; else None."""
    if path.parent.parent.name == "github" and path.parent.name:
        return path.parent.name
    return None
