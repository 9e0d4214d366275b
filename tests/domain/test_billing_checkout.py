"""Credit packs bought through Stripe Checkout: granted once per session, whatever arrives."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest
import respx
from sqlalchemy import BigInteger

from domain import account_locks, balances
from domain.account_opening import ensure_account
from domain.accounts import account_for_customer, link_customer
from domain.packs import CreditPack, PackSpec, list_packs, set_pack
from domain.purchases import CreditPurchase, purchase_for_session
from outbox.db import transaction
from outbox.handling import PermanentFailure, RetryLater
from processors import runtime as runtimes
from processors.apply import BUSY_ACCOUNT_DELAY, Outcome, process_pass
from tests.domain.billing_support import (
    NOW,
    ORGANISME,
    PRO,
    STRIPE_BASE,
    charge,
    checkout_session,
    deliver,
    line_item,
    seed,
    stripe_event,
    table_for,
)
from tests.factories import incoming, record
from tests.fakes.stripe import FakeStripe

COMPLETED = "checkout.session.completed"
ASYNC_SUCCEEDED = "checkout.session.async_payment_succeeded"


@pytest.fixture
def table(database_url):
    return table_for(database_url)


def balance(sessions, account_id=1):
    with transaction(sessions) as s:
        return balances.balance(s, account_id)


def test_a_paid_checkout_grants_its_pack_once_however_often_it_arrives(sessions, table):
    seed(sessions, 1)
    obj = checkout_session(1, pack=PRO)
    completed = stripe_event(COMPLETED, obj)
    for event in (completed, completed, stripe_event(COMPLETED, obj)):  # redelivery, then a copy
        deliver(sessions, table, event)
    deliver(sessions, table, stripe_event(ASYNC_SUCCEEDED, obj))
    assert balance(sessions) == Decimal(85)
    with transaction(sessions) as s:
        (entry,) = balances.history(s, 1)
        assert entry.key == f"pack:{obj['id']}"
        assert entry.event_id == completed.id
        assert purchase_for_session(s, obj["id"]).description == "Pro"


def test_an_async_payment_grants_when_it_succeeds_not_when_the_session_completes(sessions, table):
    seed(sessions, 1)
    obj = checkout_session(1, pack=ORGANISME, payment_status="unpaid")
    deliver(sessions, table, stripe_event(COMPLETED, obj))
    assert balance(sessions) == 0
    paid = dict(obj, payment_status="paid")
    deliver(sessions, table, stripe_event(ASYNC_SUCCEEDED, paid))
    deliver(sessions, table, stripe_event(COMPLETED, paid))
    deliver(sessions, table, stripe_event(ASYNC_SUCCEEDED, paid))
    assert balance(sessions) == Decimal(250)


def test_the_succeeded_event_first_then_the_completed_one_still_grants_once(sessions, table):
    seed(sessions, 1)
    obj = checkout_session(1, pack=PRO)
    deliver(sessions, table, stripe_event(ASYNC_SUCCEEDED, obj, created=1_780_000_100))
    deliver(sessions, table, stripe_event(COMPLETED, obj, created=1_780_000_000))
    assert balance(sessions) == Decimal(85)


def test_a_subscription_checkout_grants_nothing_but_links_the_customer(sessions, table):
    seed(sessions, 1)
    obj = checkout_session(1, customer="cus_sub", mode="subscription", subscription="sub_1")
    deliver(sessions, table, stripe_event(COMPLETED, obj))
    with transaction(sessions) as s:
        assert balances.balance(s, 1) == 0
        assert account_for_customer(s, "cus_sub").id == 1


def test_line_items_are_fetched_from_stripe_when_the_event_does_not_carry_them(
    sessions, database_url
):
    seed(sessions, 1)
    table = table_for(database_url, stripe_api_key="sk_test_x")
    obj = checkout_session(1)
    with respx.mock() as router:
        stripe = FakeStripe(router, api_key="sk_test_x")
        stripe.add_checkout_session(obj, [line_item(PRO, 2), line_item(ORGANISME)])
        deliver(sessions, table, stripe_event(COMPLETED, obj))
    assert stripe.calls == [("GET", f"/v1/checkout/sessions/{obj['id']}/line_items")]
    assert balance(sessions) == Decimal(85 * 2 + 250)
    with transaction(sessions) as s:
        assert purchase_for_session(s, obj["id"]).description == "Pro x2, Organisme"


def test_line_items_the_event_carries_need_no_stripe_call(sessions, database_url):
    seed(sessions, 1)
    table = table_for(database_url, stripe_api_key="sk_test_x")
    obj = checkout_session(
        1, line_items={"object": "list", "has_more": False, "data": [line_item(PRO)]}
    )
    with respx.mock(assert_all_called=False) as router:
        stripe = FakeStripe(router)
        deliver(sessions, table, stripe_event(COMPLETED, obj))
    assert stripe.calls == []
    assert balance(sessions) == Decimal(85)


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (httpx.Response(500, json={"error": {"message": "boom"}}), RetryLater),
        (httpx.Response(429, json={"error": {"message": "slow down"}}), RetryLater),
        (httpx.Response(404, json={"error": {"message": "No such session"}}), PermanentFailure),
        (httpx.ConnectError("refused"), RetryLater),
    ],
)
def test_a_failed_line_items_read_is_retried_or_dead_and_grants_nothing(
    sessions, database_url, answer, outcome
):
    seed(sessions, 1)
    table = table_for(database_url, stripe_api_key="sk_test_x")
    obj = checkout_session(1)
    with respx.mock(base_url=STRIPE_BASE) as stripe:
        route = stripe.get(f"/v1/checkout/sessions/{obj['id']}/line_items")
        if isinstance(answer, Exception):
            route.side_effect = answer
        else:
            route.return_value = answer
        with pytest.raises(outcome):
            deliver(sessions, table, stripe_event(COMPLETED, obj))
    assert route.call_count == 1  # no retry hidden inside the client
    assert balance(sessions) == 0


def test_without_an_api_key_a_session_without_a_pack_waits(sessions, table):
    seed(sessions, 1)
    with pytest.raises(RetryLater, match="STRIPE_API_KEY"):
        deliver(sessions, table, stripe_event(COMPLETED, checkout_session(1)))


def test_an_unknown_pack_is_a_permanent_failure_until_the_operator_adds_it(sessions, table):
    seed(sessions, 1)
    obj = checkout_session(1, pack="price_unknown")
    event = stripe_event(COMPLETED, obj)
    with pytest.raises(PermanentFailure, match="no credit pack for price price_unknown"):
        deliver(sessions, table, event)
    assert balance(sessions) == 0
    with transaction(sessions) as s:
        assert purchase_for_session(s, obj["id"]) is None
        set_pack(s, PackSpec("price_unknown", "Essai", Decimal("2.5")), now=NOW)
    deliver(sessions, table, event)  # the operator's replay
    deliver(sessions, table, event)
    assert balance(sessions) == Decimal("2.5")


def test_a_checkout_that_fails_in_a_batch_writes_nothing_not_even_its_customer_link(
    sessions, engine, settings
):
    seed(sessions, 1, 2)
    good = stripe_event(COMPLETED, checkout_session(1, pack=PRO, customer="cus_good"))
    bad = stripe_event(COMPLETED, checkout_session(2, pack="price_gone", customer="cus_bad"))
    runtime = runtimes.configure(settings, engine=engine)
    ids = [r.id for r in record(engine, *(stored(event) for event in (good, bad)))]
    assert process_pass(runtime, ids) == {Outcome.DONE: 1, Outcome.DEAD: 1}
    with transaction(sessions) as s:
        assert account_for_customer(s, "cus_good").id == 1
        assert account_for_customer(s, "cus_bad") is None
        assert (balances.balance(s, 1), balances.balance(s, 2)) == (Decimal(85), 0)


def test_a_checkout_that_fails_alone_writes_nothing_not_even_its_customer_link(sessions, table):
    seed(sessions, 2)
    bad = stripe_event(COMPLETED, checkout_session(2, pack="price_gone", customer="cus_bad"))
    with pytest.raises(PermanentFailure):
        deliver(sessions, table, bad)
    with transaction(sessions) as s:
        assert account_for_customer(s, "cus_bad") is None


def stored(event):
    """The webhook row of a built event, as the ingress would record it."""
    return incoming(
        event.delivery_id, event_type=event.event_type, body=event.payload,
        created=event.provider_created_at,
    )  # fmt: skip


def test_a_payment_beyond_32_bits_is_granted_refunded_and_priced(sessions, table):
    idr = 2_170_000_000  # minor units: an IDR-sized order, past 2**31
    money = [CreditPurchase.amount_total, CreditPurchase.refunded_amount, CreditPack.unit_amount]
    assert all(isinstance(column.type, BigInteger) for column in money)  # SQLite's too
    seed(sessions, 1)
    with transaction(sessions) as s:
        set_pack(s, PackSpec("price_idr", "Besar", Decimal(85), idr, "idr"), now=NOW)
    obj = checkout_session(1, pack="price_idr")
    obj.update(amount_total=idr, currency="idr")
    deliver(sessions, table, stripe_event(COMPLETED, obj))
    refunded = charge(obj["payment_intent"], idr, idr - 1)
    deliver(sessions, table, stripe_event("charge.refunded", refunded))
    with transaction(sessions) as s:
        purchase = purchase_for_session(s, obj["id"])
        assert (purchase.amount_total, purchase.refunded_amount) == (idr, idr - 1)
        assert {p.price_id: p.unit_amount for p in list_packs(s)}["price_idr"] == idr
        assert balances.balance(s, 1) == 0  # all but one minor unit refunded: 85 at 0.0001


def test_a_retired_pack_is_still_granted_when_paid(sessions, table):
    seed(sessions, 1)
    with transaction(sessions) as s:
        from domain.packs import retire_pack

        assert retire_pack(s, PRO, now=NOW)
    deliver(sessions, table, stripe_event(COMPLETED, checkout_session(1, pack=PRO)))
    assert balance(sessions) == Decimal(85)


def test_a_session_for_an_account_not_yet_known_is_retried_then_granted(sessions, table):
    seed(sessions)
    event = stripe_event(COMPLETED, checkout_session(5, pack=PRO, customer="cus_5"))
    with pytest.raises(RetryLater, match="account 5 does not exist yet"):
        deliver(sessions, table, event)
    with transaction(sessions) as s:
        ensure_account(s, 5, login="late", now=NOW, welcome_credits=Decimal(50))
    deliver(sessions, table, event)
    with transaction(sessions) as s:
        assert balances.balance(s, 5) == Decimal(135)
        assert account_for_customer(s, "cus_5").id == 5


def test_the_account_may_be_named_by_metadata_or_by_its_linked_customer(sessions, table):
    seed(sessions, 1, 2)
    by_metadata = checkout_session(None, pack=PRO)
    by_metadata["metadata"]["github_account_id"] = "2"
    deliver(sessions, table, stripe_event(COMPLETED, by_metadata))
    by_customer = checkout_session(None, pack=PRO, customer="cus_1")
    with pytest.raises(RetryLater, match="cus_1 is linked to none"):
        deliver(sessions, table, stripe_event(COMPLETED, by_customer))
    with transaction(sessions) as s:
        link_customer(s, 1, "cus_1", now=NOW)
    deliver(sessions, table, stripe_event(COMPLETED, by_customer))
    assert (balance(sessions, 1), balance(sessions, 2)) == (Decimal(85), Decimal(85))


@pytest.mark.parametrize("ref", ["octocat", "12abc", "-3"])
def test_a_session_naming_no_usable_account_is_dead_with_a_reason(sessions, table, ref):
    seed(sessions, 1)
    with pytest.raises(PermanentFailure, match="not a GitHub account id"):
        deliver(sessions, table, stripe_event(COMPLETED, checkout_session(ref, pack=PRO)))
    with pytest.raises(PermanentFailure, match="names no account"):
        deliver(sessions, table, stripe_event(COMPLETED, checkout_session(None, pack=PRO)))


def test_a_customer_already_linked_elsewhere_is_not_stolen(sessions, table):
    seed(sessions, 1, 2)
    with transaction(sessions) as s:
        link_customer(s, 1, "cus_shared", now=NOW)
    deliver(
        sessions,
        table,
        stripe_event(COMPLETED, checkout_session(2, pack=PRO, customer="cus_shared")),
    )
    with transaction(sessions) as s:
        assert account_for_customer(s, "cus_shared").id == 1
        assert balances.balance(s, 2) == Decimal(85)


def test_an_event_without_a_session_object_is_dead(sessions, table):
    event = stripe_event(COMPLETED, {})
    event.payload["data"] = {}
    with pytest.raises(PermanentFailure):
        deliver(sessions, table, event)


def test_every_checkout_shape_is_granted_set_based_and_links_customers_as_in_turn(sessions, table):
    """Account by client_reference_id or metadata, pack by metadata or only through line
    items (several packs, quantities), a customer on every session: one apply_many call
    grants them all, and links each customer as applying them one after the other would
    (the first link of an account or a customer wins; an earlier link stands)."""
    from domain.billing_handlers import apply_checkouts

    seed(sessions, 1, 2, 3)
    with transaction(sessions) as s:
        link_customer(s, 3, "cus_old", now=NOW)
    by_metadata = checkout_session(None, customer="cus_b")
    by_metadata["metadata"]["github_account_id"] = "2"
    by_metadata["line_items"] = {
        "object": "list",
        "has_more": False,
        "data": [line_item(PRO, 2), line_item(ORGANISME)],
    }
    events = [
        stripe_event(COMPLETED, checkout_session(1, pack=PRO, customer="cus_a")),
        stripe_event(COMPLETED, checkout_session(1, pack=PRO, customer="cus_b")),
        stripe_event(COMPLETED, by_metadata),
        stripe_event(COMPLETED, checkout_session(3, pack=PRO, customer="cus_new")),
    ]
    with transaction(sessions) as s:
        assert apply_checkouts(s, [(event, None) for event in events]) == [None] * 4
    with transaction(sessions) as s:
        assert [balances.balance(s, a) for a in (1, 2, 3)] == [170, 85 * 2 + 250, 85]
        linked = {c: account_for_customer(s, c) for c in ("cus_a", "cus_b", "cus_old", "cus_new")}
        assert {c: a.id if a else None for c, a in linked.items()} == {
            "cus_a": 1, "cus_b": 2, "cus_old": 3, "cus_new": None
        }  # fmt: skip


def test_a_batch_links_a_customer_as_in_turn_past_an_account_linked_before(sessions, table):
    """The first checkout names a customer for an account linked before (its link stands,
    nothing is linked); the next names the same customer for an account with none: in
    turn, that one links it, and in a batch too."""
    from domain.billing_handlers import apply_checkouts

    seed(sessions, 1, 2)
    with transaction(sessions) as s:
        link_customer(s, 1, "cus_old", now=NOW)
    events = [
        stripe_event(COMPLETED, checkout_session(1, pack=PRO, customer="cus_next")),
        stripe_event(COMPLETED, checkout_session(2, pack=PRO, customer="cus_next")),
    ]
    with transaction(sessions) as s:
        assert apply_checkouts(s, [(event, None) for event in events]) == [None] * 2
    with transaction(sessions) as s:
        assert account_for_customer(s, "cus_old").id == 1
        assert account_for_customer(s, "cus_next").id == 2
        assert account_locks.held_customers(s, [1]) == {}  # nothing held in a new transaction
        account_locks.lock_accounts(s, [1, 2])
        assert account_locks.held_customers(s, [1, 2]) == {1: "cus_old", 2: "cus_next"}


def test_a_checkout_whose_account_another_batch_holds_goes_back_unrun_then_applies(
    sessions, engine, settings
):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no other batch holds an account")
    seed(sessions, 1)
    runtime = runtimes.configure(settings, engine=engine)
    [row] = record(engine, stored(stripe_event(COMPLETED, checkout_session(1, pack=PRO))))
    with sessions() as other_batch, other_batch.begin():
        account_locks.lock_account(other_batch, 1)
        assert process_pass(runtime, [row.id]) == {Outcome.RELEASED: 1}  # no wait, no attempt
    assert process_pass(runtime, [row.id]) == {}  # not taken straight back
    time.sleep(BUSY_ACCOUNT_DELAY.total_seconds())
    assert process_pass(runtime, [row.id]) == {Outcome.DONE: 1}
    assert balance(sessions) == Decimal(85)


def test_rows_carried_past_a_busy_account_go_in_full_batches_and_the_pass_drains_the_rest(
    sessions, engine, settings
):
    """While another batch holds account 1, its checkout is carried from batch to batch
    and finally given back; each batch it is carried to is filled up with newly claimed
    rows, so the one pass applies every other row instead of ending in small batches."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no other batch holds an account")
    seed(sessions, 1, 2)
    runtime = runtimes.configure(settings, engine=engine)
    events = [stripe_event(COMPLETED, checkout_session(1, pack=PRO))]
    events += [stripe_event(COMPLETED, checkout_session(2, pack=PRO)) for _ in range(60)]
    rows = record(engine, *(stored(event) for event in events))
    with sessions() as other_batch, other_batch.begin():
        account_locks.lock_account(other_batch, 1)
        counts = process_pass(runtime, [rows[0].id])
    assert counts == {Outcome.DONE: 60, Outcome.RELEASED: 1}
    assert balance(sessions, 2) == Decimal(85 * 60)


def test_the_accounts_of_a_batch_of_checkouts_are_read_at_once_as_one_by_one(sessions, table):
    """checkout_accounts_many: the account each checkout names, else its customer's, in
    one read for the lot; the same answers as checkout_accounts gives each in turn."""
    from domain.billing_accounts import checkout_accounts, checkout_accounts_many

    seed(sessions, 1, 2)
    with transaction(sessions) as s:
        link_customer(s, 2, "cus_two", now=NOW)
    malformed = stripe_event(COMPLETED, checkout_session(None))
    malformed.payload["data"]["object"]["client_reference_id"] = "not a number"
    events = [
        stripe_event(COMPLETED, checkout_session(1, pack=PRO, customer="cus_two")),
        stripe_event(COMPLETED, checkout_session(None, pack=PRO, customer="cus_two")),
        stripe_event(COMPLETED, checkout_session(None, pack=PRO, customer="cus_nobody")),
        malformed,
    ]
    with transaction(sessions) as s:
        found = checkout_accounts_many(s, [(event, None) for event in events])
        assert found == [[1], [2], [], []]
        assert found[:3] == [checkout_accounts(s, event, None) for event in events[:3]]


def test_a_batch_of_checkouts_applies_in_its_transaction_without_a_savepoint(
    sessions, engine, settings
):
    """A set-based handler reports each row's failure instead of raising: its rows need no
    savepoint (a row that fails still writes nothing, the others are granted)."""
    from sqlalchemy import event as sa_event

    seed(sessions, 1, 2)
    runtime = runtimes.configure(settings, engine=engine)
    events = [stripe_event(COMPLETED, checkout_session(a, pack=PRO)) for a in (1, 2, 1)]
    events.append(stripe_event(COMPLETED, checkout_session(1, pack="price_gone")))
    rows = record(engine, *(stored(event) for event in events))
    savepoints: list[str] = []
    listener = lambda _conn, name: savepoints.append(name)  # noqa: E731
    sa_event.listen(engine, "savepoint", listener)
    try:
        counts = process_pass(runtime, [row.id for row in rows])
    finally:
        sa_event.remove(engine, "savepoint", listener)
    assert counts == {Outcome.DONE: 3, Outcome.DEAD: 1}
    assert savepoints == []
    assert [balance(sessions, a) for a in (1, 2)] == [Decimal(170), Decimal(85)]
