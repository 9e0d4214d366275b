"""Reconciling with the providers: webhooks they sent (or tried to) that the outbox never stored.

Stripe keeps its events for 30 days and lists them through the API: each one we handle and
never received is stored as if it had arrived, marked `backfilled`, and processed like any
other (its effects are keyed, so an event that did arrive meanwhile is still applied once).

GitHub keeps an App's webhook deliveries for a few days and redelivers one on request: each
failed delivery whose guid we never stored, and that no later attempt delivered, is asked
for again; it then arrives through the ingress, signed, like the first time.

Network calls (`fetch_*`, `redeliver`) are at the edges; the decisions in the middle.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from githubkit import AppAuthStrategy, GitHub
from sqlalchemy.orm import Session

from outbox import store
from outbox.driver.dbapi import of_session
from outbox.handling import Handler
from outbox.models import Source
from outbox.queries import known_deliveries
from outbox.settings import StripeMode
from outbox.store import DeliveryIdNotStorable, IncomingEvent
from outbox.stripe_events import incoming_stripe_event

#: The billing event types, used until the domain's handler table names its own Stripe types.
FALLBACK_STRIPE_TYPES = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "charge.refunded",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
)
#: How far back Stripe lists events.
STRIPE_EVENT_RETENTION = timedelta(days=30)
#: How far back GitHub lets an App redeliver its webhook deliveries.
GITHUB_REDELIVERY_WINDOW = timedelta(days=3)
STRIPE_TYPES_PER_REQUEST = 20  #: Stripe's limit on the `types` filter of one listing
PAGE_SIZE = 100  #: items per API page, the most either provider gives
#: `verified_by` of a backfilled row: fetched with our API key, so Stripe itself vouches for it.
BACKFILL_VERIFIED_BY = "stripe-api"


# --- Stripe -----------------------------------------------------------------------------------


def handled_stripe_types(table: Mapping[tuple[str, str], Handler]) -> list[str]:
    """The Stripe event types the handlers name; the billing types until they name any.
    A wildcard pattern (`invoice.*`) is not a type Stripe's event list can be asked for."""
    types = sorted(
        {pattern for source, pattern in table if source == Source.STRIPE and "*" not in pattern}
    )
    return types or list(FALLBACK_STRIPE_TYPES)


def fetch_stripe_pages(
    client: stripe.StripeClient, *, since: datetime, types: Sequence[str]
) -> Iterator[list[dict[str, Any]]]:
    """Every event of `types` created at or after `since`, a page at a time, as the API's JSON.

    Newest first within each group of at most 20 types; paged with `starting_after`. Pages
    come one by one so that the caller stores each before asking for the next: no database
    transaction is held open while Stripe answers.
    """
    for start in range(0, len(types), STRIPE_TYPES_PER_REQUEST):
        params: dict[str, Any] = {
            "created": {"gte": int(since.timestamp())},
            "types": list(types[start : start + STRIPE_TYPES_PER_REQUEST]),
            "limit": PAGE_SIZE,
        }
        while True:
            page = client.v1.events.list(params)  # type: ignore[arg-type]
            # The page's own JSON, not the SDK's objects: the stored body is what Stripe sent.
            response = page.last_response
            data = json.loads(response.body)["data"] if response is not None else []
            if data:
                yield data
            if not page.has_more or not data:
                break
            params = {**params, "starting_after": data[-1]["id"]}


@dataclass(frozen=True)
class Backfill:
    """What reconcile did with one event Stripe listed."""

    event_id: str
    event_type: str
    created: datetime | None
    #: "stored" (new row, backfilled), "already stored", "missing" (dry run: would store),
    #: or "refused: …" (an id the outbox cannot store exactly).
    outcome: str
    row_id: int | None = None
    status: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "created": self.created.isoformat() if self.created else None,
            "outcome": self.outcome,
            "row_id": self.row_id,
            "status": self.status,
        }


def backfill_stripe(
    session: Session,
    events: Sequence[dict[str, Any]],
    *,
    mode: StripeMode,
    now: datetime,
    dry_run: bool = False,
) -> list[Backfill]:
    """Store each listed event not stored yet, as the ingress would have; the caller commits.

    Idempotent: the outbox's unique (source, delivery id) makes a second run, or a webhook
    that arrives meanwhile, a duplicate. In a dry run nothing is written.
    """
    incoming: list[IncomingEvent] = []
    refused: list[Backfill] = []
    for event in events:
        try:
            incoming.append(
                incoming_stripe_event(
                    _event_bytes(event), {}, BACKFILL_VERIFIED_BY, mode, backfilled=True
                )
            )
        except DeliveryIdNotStorable as exc:  # as the ingress refuses it: never merged
            refused.append(
                Backfill(str(event.get("id"))[:255], str(event.get("type"))[:255], None,
                         f"refused: {exc}")
            )  # fmt: skip
    return [*_backfill(session, incoming, now, dry_run), *refused]


def _backfill(
    session: Session, incoming: list[IncomingEvent], now: datetime, dry_run: bool
) -> list[Backfill]:
    if dry_run:
        known = known_deliveries(
            of_session(session), Source.STRIPE, [i.delivery_id for i in incoming]
        )
        return [
            Backfill(
                i.delivery_id,
                i.event_type,
                i.provider_created_at,
                "already stored" if i.delivery_id in known else "missing",
            )
            for i in incoming
        ]
    recorded = store.record(session.connection(), incoming, now)
    return [
        Backfill(
            i.delivery_id,
            i.event_type,
            i.provider_created_at,
            "already stored" if r.duplicate else "stored",
            r.id,
            r.status,
        )
        for i, r in zip(incoming, recorded, strict=True)
    ]


def _event_bytes(event: dict[str, Any]) -> bytes:
    # ASCII escapes keep any character the API sent, lone surrogates included, storable.
    return json.dumps(event, separators=(",", ":")).encode("ascii")


# --- GitHub -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One attempt GitHub made to deliver a webhook to the App (from GET /app/hook/deliveries)."""

    id: int
    guid: str
    delivered_at: datetime
    status: str
    status_code: int
    event: str
    action: str | None
    redelivery: bool

    @property
    def delivered(self) -> bool:
        return 200 <= self.status_code < 300


def fetch_github_deliveries(
    github: GitHub[AppAuthStrategy], *, since: datetime
) -> Iterator[Delivery]:
    """The App's deliveries at or after `since`, newest first (cursor paging, App JWT)."""
    pages = github.rest.paginate(github.rest.apps.list_webhook_deliveries, per_page=PAGE_SIZE)
    for item in pages:
        delivered_at = item.delivered_at
        if delivered_at.tzinfo is None:  # GitHub says "Z"; never compare naive with aware
            delivered_at = delivered_at.replace(tzinfo=UTC)
        if delivered_at < since:
            return  # newest first: everything further is older
        yield Delivery(
            id=item.id,
            guid=item.guid,
            delivered_at=delivered_at,
            status=item.status,
            status_code=item.status_code,
            event=item.event,
            action=item.action,
            redelivery=item.redelivery,
        )


@dataclass(frozen=True)
class Redelivery:
    """What reconcile decided for one webhook (guid) that GitHub failed to deliver at least once.

    :param attempt: the failed delivery to redeliver (the latest failed one).
    :param decision: "redeliver", "already stored" (GitHub saw an error, but the row is
        here: an answer lost after the commit), or "delivered since" (a later attempt got 2xx).
    """

    guid: str
    event: str
    attempt: Delivery
    decision: str
    #: After acting: None when asked (or nothing to do), else why GitHub refused.
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "guid": self.guid,
            "event": self.event,
            "delivery_id": self.attempt.id,
            "delivered_at": self.attempt.delivered_at.isoformat(),
            "status_code": self.attempt.status_code,
            "status": self.attempt.status,
            "decision": self.decision,
            "error": self.error,
        }


def plan_redeliveries(deliveries: Iterable[Delivery], stored_guids: set[str]) -> list[Redelivery]:
    """For each guid with a failed attempt: redeliver it, unless stored or delivered since."""
    by_guid: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        by_guid.setdefault(delivery.guid, []).append(delivery)
    plan = []
    for guid, attempts in by_guid.items():
        failed = [a for a in attempts if not a.delivered]
        if not failed:
            continue
        latest = max(failed, key=lambda a: (a.delivered_at, a.id))
        event = f"{latest.event}.{latest.action}" if latest.action else latest.event
        if any(a.delivered for a in attempts):
            decision = "delivered since"
        elif guid in stored_guids:
            decision = "already stored"
        else:
            decision = "redeliver"
        plan.append(Redelivery(guid, event, latest, decision))
    return sorted(plan, key=lambda r: (r.attempt.delivered_at, r.attempt.id))


def stored_guids(session: Session, deliveries: Sequence[Delivery]) -> set[str]:
    return known_deliveries(of_session(session), Source.GITHUB, [d.guid for d in deliveries])


def redeliver(github: GitHub[AppAuthStrategy], delivery: Delivery) -> None:
    """Ask GitHub to deliver this attempt's webhook again (POST …/deliveries/{id}/attempts)."""
    github.rest.apps.redeliver_webhook_delivery(delivery.id)
