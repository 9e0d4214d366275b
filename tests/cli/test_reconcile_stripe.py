"""`outbox reconcile stripe`: events Stripe lists that we never received are stored, once."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from sqlalchemy import select

from ingress.stripe import stripe_event
from outbox.handling import Handler, HandlerTable
from outbox.models import Source, Status, WebhookEvent
from outbox.reconcile import FALLBACK_STRIPE_TYPES
from outbox.settings import Settings
from tests.factories import record, stripe_event_body

EVENTS_URL = "https://api.stripe.com/v1/events"


def handled_here(settings: Settings) -> HandlerTable:
    """A handler table naming two Stripe types (and a GitHub one, which reconcile ignores)."""
    noop = Handler("noop", apply=lambda session, event, prepared: None)
    return {
        ("stripe", "invoice.paid"): noop,
        ("stripe", "charge.refunded"): noop,
        ("github", "push"): noop,
    }


def nothing_handled(settings: Settings) -> HandlerTable:
    return {}


def event(event_id: str, event_type: str = "invoice.paid", *, age: int = 3600, **obj) -> dict:
    body = stripe_event_body(
        {"id": f"obj_{event_id}", "object": "invoice", **obj},
        event_type,
        event_id=event_id,
        created=int(time.time()) - age,
    )
    return json.loads(body)


def page(events: list[dict], has_more: bool = False) -> httpx.Response:
    return httpx.Response(
        200, json={"object": "list", "data": events, "has_more": has_more, "url": "/v1/events"}
    )


def rows(engine) -> dict[str, WebhookEvent]:
    with engine.connect() as conn:
        return {
            r.delivery_id: r
            for r in conn.execute(select(WebhookEvent).order_by(WebhookEvent.id)).all()
        }


@pytest.fixture
def stripe_cli(cli):
    def run(*args: str, **env: str | None):
        env.setdefault("stripe_api_key", "sk_test_reconcile")
        return cli("reconcile", "stripe", *args, **env)

    return run


def query(call) -> dict[str, list[str]]:
    return parse_qs(call.request.url.query.decode())


@respx.mock
def test_missing_events_are_stored_as_if_they_had_arrived_marked_backfilled(stripe_cli, engine):
    received = event("evt_received")
    missing_new = event("evt_missing_new", age=600, client_reference_id="42")
    missing_old = event("evt_missing_old", "invoice.paid", age=7200, subscription="sub_9")
    record(engine, stripe_event(json.dumps(received).encode(), {}, "stripe#0", "any"))
    route = respx.get(EVENTS_URL).mock(
        side_effect=[page([missing_new, received], has_more=True), page([missing_old])]
    )
    ran = stripe_cli("--since", "3d")
    assert ran.code == 0, ran.stderr
    assert "Stripe listed 3 event(s)" in ran.stdout
    assert "1 already stored, 2 stored as backfilled" in ran.stdout
    assert route.call_count == 2
    assert query(route.calls[1])["starting_after"] == ["evt_received"]
    stored = rows(engine)
    assert stored["evt_received"].backfilled is False
    for name, sent in (("evt_missing_new", missing_new), ("evt_missing_old", missing_old)):
        row = stored[name]
        assert row.backfilled is True and row.status == Status.PENDING
        assert row.source == Source.STRIPE and row.verified_by == "stripe-api"
        assert json.loads(row.raw_body) == sent  # the event as the API returned it
        # every field the ingress would have recorded for the same event
        as_ingress = stripe_event(row.raw_body, {}, "stripe-api", "any").row(row.received_at)
        for field in ("event_type", "livemode", "account_id", "object_id", "provider_created_at",
                      "api_version", "stripe_account"):  # fmt: skip
            assert getattr(row, field) == as_ingress[field], field
    assert stored["evt_missing_new"].account_id == 42
    assert stored["evt_missing_old"].object_id == "sub_9"  # invoices go with their subscription


@respx.mock
def test_a_second_run_stores_nothing_new(stripe_cli, engine):
    respx.get(EVENTS_URL).mock(return_value=page([event("evt_1"), event("evt_2")]))
    assert stripe_cli().code == 0
    again = stripe_cli("--json")
    assert again.code == 0
    assert {r["outcome"] for r in again.json_lines()} == {"already stored"}
    assert len(rows(engine)) == 2


@respx.mock
def test_dry_run_lists_what_is_missing_and_stores_nothing(stripe_cli, engine):
    record(engine, stripe_event(json.dumps(event("evt_have")).encode(), {}, "stripe#0", "any"))
    respx.get(EVENTS_URL).mock(return_value=page([event("evt_have"), event("evt_lost")]))
    ran = stripe_cli("--dry-run", "--json")
    assert ran.code == 0
    outcomes = {r["event_id"]: r["outcome"] for r in ran.json_lines()}
    assert outcomes == {"evt_have": "already stored", "evt_lost": "missing"}
    assert "missing (dry run: nothing stored)" in ran.stderr
    assert set(rows(engine)) == {"evt_have"}


@respx.mock
def test_the_listing_asks_for_the_handled_types_since_the_time_given(stripe_cli, engine):
    route = respx.get(EVENTS_URL).mock(return_value=page([]))
    before = int(time.time())
    ran = stripe_cli("--since", "2d", handler_table="tests.cli.test_reconcile_stripe:handled_here")
    assert ran.code == 0, ran.stderr
    sent = query(route.calls[0])
    assert sorted(v for k, v in sent.items() if k.startswith("types")) == [
        ["charge.refunded"],
        ["invoice.paid"],
    ]
    assert abs(int(sent["created[gte]"][0]) - (before - 2 * 86400)) <= 5
    assert sent["limit"] == ["100"]


@respx.mock
def test_without_stripe_handlers_the_billing_types_are_asked_for(stripe_cli, engine):
    route = respx.get(EVENTS_URL).mock(return_value=page([]))
    assert stripe_cli(handler_table="tests.cli.test_reconcile_stripe:nothing_handled").code == 0
    sent = query(route.calls[0])
    assert sorted(v[0] for k, v in sent.items() if k.startswith("types")) == sorted(
        FALLBACK_STRIPE_TYPES
    )


@respx.mock
def test_by_default_the_types_are_those_the_domain_handles(stripe_cli, engine, settings):
    from domain.handlers import handler_table

    route = respx.get(EVENTS_URL).mock(return_value=page([]))
    assert stripe_cli().code == 0
    asked = sorted(v[0] for k, v in query(route.calls[0]).items() if k.startswith("types"))
    assert asked == sorted(t for s, t in handler_table(settings) if s == "stripe")


@respx.mock
def test_an_event_of_the_other_mode_is_kept_but_never_applied(stripe_cli, engine):
    respx.get(EVENTS_URL).mock(return_value=page([event("evt_test_mode")]))
    assert stripe_cli(stripe_mode="live").code == 0
    row = rows(engine)["evt_test_mode"]
    assert row.status == Status.SKIPPED and row.backfilled
    assert row.last_error == "test-mode event; STRIPE_MODE=live"


@respx.mock
def test_stored_events_are_rung_or_left_to_the_sweeper(stripe_cli, engine):
    respx.get(EVENTS_URL).mock(return_value=page([event("evt_ring")]))
    ran = stripe_cli()
    assert "the sweeper will pick them up" in ran.stdout


@respx.mock
def test_a_stripe_error_exits_1_keeping_the_pages_stored_before_it(stripe_cli, engine):
    respx.get(EVENTS_URL).mock(
        side_effect=[
            page([event("evt_first_page")], has_more=True),
            httpx.Response(401, json={"error": {"message": "Invalid API Key provided: sk_test_*"}}),
        ]
    )
    ran = stripe_cli()
    assert ran.code == 1
    assert "Stripe API: Invalid API Key provided" in ran.stderr
    assert "1 event(s) were stored before it" in ran.stderr and "run it again" in ran.stderr
    assert set(rows(engine)) == {"evt_first_page"}


def test_usage_errors_exit_2(stripe_cli, cli, engine):
    too_far = stripe_cli("--since", "31d")
    assert too_far.code == 2 and "30 days" in too_far.stderr
    assert stripe_cli("--since", "soon").code == 2
    assert stripe_cli("--since", "2099-01-01").code == 2
    unset = cli("reconcile", "stripe")
    assert unset.code == 2 and "STRIPE_API_KEY is not set" in unset.stderr
    assert cli("reconcile", "paypal").code == 2


@respx.mock
def test_more_than_twenty_types_are_asked_for_in_groups_stripe_accepts():
    from datetime import UTC, datetime

    from domain.clients import stripe_client
    from outbox.reconcile import fetch_stripe_pages

    route = respx.get(EVENTS_URL).mock(return_value=page([event("evt_x")]))
    client = stripe_client(Settings(stripe_api_key="sk_test_groups"))
    types = [f"type.{n}" for n in range(25)]
    listed = list(fetch_stripe_pages(client, since=datetime.now(UTC), types=types))
    assert [[e["id"] for e in p] for p in listed] == [["evt_x"], ["evt_x"]]  # a page a group
    groups = [[k for k in query(c) if k.startswith("types")] for c in route.calls]
    assert [len(g) for g in groups] == [20, 5]


@respx.mock
def test_unicode_digits_in_ids_are_read_as_absent_and_the_event_is_still_stored(stripe_cli, engine):
    hostile = event("evt_digits", client_reference_id="²", metadata={"github_account_id": "٣"})
    hostile["created"] = "①"
    unstorable = event("evt_nul\x00")
    respx.get(EVENTS_URL).mock(return_value=page([hostile, unstorable]))
    ran = stripe_cli("--since", "3d")
    assert ran.code == 0, ran.stderr
    assert "refused" in ran.stderr and "NUL" in ran.stderr
    stored = rows(engine)
    assert set(stored) == {"evt_digits"}
    assert stored["evt_digits"].account_id is None  # "٣" is not 3
    assert stored["evt_digits"].provider_created_at is None


def test_the_types_asked_of_stripe_are_the_exact_ones_never_a_wildcard():
    from outbox.reconcile import handled_stripe_types
    from outbox.registry import Registry

    registry = Registry()
    handler = Handler("audit", apply=lambda session, event, prepared: None)
    for source, pattern in [("stripe", "invoice.paid"), ("stripe", "invoice.*"),
                            ("stripe", "*"), ("github", "push")]:  # fmt: skip
        registry.on(source, pattern, handler)
    assert handled_stripe_types(registry.table()) == ["invoice.paid"]
