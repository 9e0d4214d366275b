"""The fake providers answer the project's own clients (githubkit, stripe) over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx
import stripe
from githubkit.exception import RequestFailed

from domain.clients import github_app, stripe_client
from outbox.settings import Settings
from tests.fakes.github import throwaway_private_key
from tests.fakes.providers import FakeProviders
from tests.fakes.stripe import STRIPE_BASE, FakeStripe

REPO = "octo/app"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as providers:
        providers.github.add_repo(REPO)
        yield providers


@pytest.fixture(scope="module")
def settings(fake: FakeProviders) -> Settings:
    return Settings(
        github_app_id="424242",
        github_app_private_key=throwaway_private_key(),
        github_api_url=fake.url,
        stripe_api_key="sk_test_fake",
        stripe_api_base=fake.url,
    )


def meter_event(client: stripe.StripeClient, identifier: str, key: str | None = None) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": "pr_jobs",
            "identifier": identifier,
            "payload": {"stripe_customer_id": "cus_1", "value": "1"},
        },
        {"idempotency_key": key or identifier},
    )


def test_a_repeated_meter_identifier_is_refused_as_already_reported(
    fake: FakeProviders, settings: Settings
) -> None:
    client = stripe_client(settings)
    meter_event(client, "usage:a", key="k1")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        meter_event(client, "usage:a", key="k2")
    assert "An event already exists with identifier usage:a" in str(refused.value)
    assert refused.value.headers is not None
    assert refused.value.headers.get("stripe-should-retry") == "false"
    assert fake.stripe.accepted["usage:a"] == 1


def test_the_same_idempotency_key_replays_the_first_answer(
    fake: FakeProviders, settings: Settings
) -> None:
    client = stripe_client(settings)
    meter_event(client, "usage:b")
    meter_event(client, "usage:b")  # same key: Stripe replays the 200, no second event
    assert fake.stripe.accepted["usage:b"] == 1


def test_a_stored_then_500_meter_event_counts_once_after_the_retry(
    fake: FakeProviders, settings: Settings
) -> None:
    client = stripe_client(settings)
    fake.stripe.fail("POST", "/meter_events", status=500, store=True)
    with pytest.raises(stripe.APIError):
        meter_event(client, "usage:c", key="kc1")
    with pytest.raises(stripe.InvalidRequestError):
        meter_event(client, "usage:c", key="kc2")
    assert fake.stripe.accepted["usage:c"] == 1


def test_line_items_subscriptions_and_missing_objects(
    fake: FakeProviders, settings: Settings
) -> None:
    client = stripe_client(settings)
    fake.stripe.add_checkout_session(
        {"id": "cs_1", "object": "checkout.session", "payment_intent": "pi_1"},
        [{"id": "li_1", "object": "item", "quantity": 2, "price": {"id": "price_pro"}}],
    )
    fake.stripe.subscriptions["sub_1"] = {"id": "sub_1", "object": "subscription"}
    items = list(client.v1.checkout.sessions.line_items.list("cs_1").auto_paging_iter())
    assert [(i.price.id, i.quantity) for i in items] == [("price_pro", 2)]
    found = client.v1.checkout.sessions.list({"payment_intent": "pi_1"})
    assert [s.id for s in found.data] == ["cs_1"]
    assert client.v1.subscriptions.retrieve("sub_1").id == "sub_1"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.subscriptions.retrieve("sub_nope")
    assert missing.value.http_status == 404


def test_a_second_pull_request_on_one_head_is_422_already_exists(
    fake: FakeProviders, settings: Settings
) -> None:
    app = github_app(settings)
    github = app.with_auth(app.auth.as_installation(7))  # type: ignore[attr-defined]
    base = github.rest.git.get_ref("octo", "app", "heads/main").json()["object"]["sha"]
    github.rest.git.create_ref("octo", "app", ref="refs/heads/feature", sha=base)
    github.rest.pulls.create("octo", "app", title="t", head="feature", base="main")
    with pytest.raises(RequestFailed) as refused:
        github.rest.pulls.create("octo", "app", title="t", head="feature", base="main")
    assert refused.value.response.status_code == 422
    assert "A pull request already exists for octo:feature" in refused.value.response.text
    listed = github.rest.pulls.list("octo", "app", head="octo:feature", state="all").json()
    assert len(listed) == 1
    assert fake.github.pull_requests_by_head()[(REPO, "feature")] == 1
    assert 7 in fake.github.tokens_minted


def test_faults_answer_5xx_a_set_number_of_times_then_work(fake: FakeProviders) -> None:
    fake.github.rate_limit("GET", "/repos/octo/app", times=1)
    fake.github.fail("GET", "/repos/octo/app", status=502, times=1)
    headers = {"Authorization": "token ghs_x"}
    statuses = [httpx.get(f"{fake.url}/repos/{REPO}", headers=headers).status_code for _ in "abc"]
    assert statuses == [403, 502, 200]


def test_hook_deliveries_list_newest_first_and_take_redelivery_requests(
    fake: FakeProviders,
) -> None:
    first = fake.github.hooks.add("guid-1", "push")
    second = fake.github.hooks.add("guid-2", "installation", action="created", status_code=503)
    listed = httpx.get(f"{fake.url}/app/hook/deliveries", params={"per_page": 1})
    assert [d["guid"] for d in listed.json()] == ["guid-2"]
    assert "cursor=1" in listed.headers["link"]
    answer = httpx.post(f"{fake.url}/app/hook/deliveries/{second['id']}/attempts")
    assert answer.status_code == 202
    assert httpx.post(f"{fake.url}/app/hook/deliveries/999/attempts").status_code == 404
    assert fake.github.hooks.redelivered == [second["id"]]
    assert first["id"] not in fake.github.hooks.redelivered


def test_stripe_events_are_listed_newest_first_in_pages(fake: FakeProviders) -> None:
    fake.stripe.events.extend(
        {"id": f"evt_{n}", "object": "event", "type": "invoice.paid", "created": 1000 + n}
        for n in range(3)
    )
    page = httpx.get(f"{fake.url}/v1/events", params={"limit": 2}).json()
    assert [e["id"] for e in page["data"]] == ["evt_2", "evt_1"] and page["has_more"]
    rest = httpx.get(f"{fake.url}/v1/events", params={"starting_after": "evt_1"}).json()
    assert [e["id"] for e in rest["data"]] == ["evt_0"]


def test_through_respx_the_stripe_fake_refuses_a_key_it_was_not_given() -> None:
    with respx.mock() as router:
        fake_stripe = FakeStripe(router, api_key="sk_test_right")
        fake_stripe.subscriptions["sub_1"] = {"id": "sub_1", "object": "subscription"}
        right = Settings(stripe_api_key="sk_test_right", stripe_api_base=STRIPE_BASE)
        wrong = Settings(stripe_api_key="sk_test_wrong", stripe_api_base=STRIPE_BASE)
        assert stripe_client(right).v1.subscriptions.retrieve("sub_1").id == "sub_1"
        with pytest.raises(stripe.AuthenticationError):
            stripe_client(wrong).v1.subscriptions.retrieve("sub_1")
    assert fake_stripe.calls == [("GET", "/v1/subscriptions/sub_1")] * 2
