"""The billing model's Stripe side: what happens at Stripe (packs bought, refunds, disputes,
subscription lifecycles), its events delivered in any order, again, replayed or purged
through the real outbox and processors, and the reference applying them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule
from sqlalchemy import select, update

from outbox import operator_writes, store
from outbox.db import transaction, utcnow
from outbox.models import Status, WebhookEvent
from outbox.stripe_events import incoming_stripe_event
from processors.apply import Outcome, process_pass
from tests.domain.billing_model_state import ModelState
from tests.domain.billing_reference import (
    CANCEL,
    FINAL,
    FUNDS_WITHDRAWN,
    INQUIRY,
    MOVES,
    RANK,
    ZERO,
    Dispute,
    Purchase,
    Sent,
    describe,
    share,
)
from tests.domain.billing_support import (
    PACK_CREDITS,
    charge,
    checkout_session,
    invoice_object,
    subscription_object,
)
from tests.domain.billing_support import dispute as stripe_dispute
from tests.factories import record, stripe_event_body

PACKS = sorted(PACK_CREDITS)


class StripeSide(ModelState):
    """The rules of the model that send, deliver and apply Stripe's events."""

    # -- Stripe: what happens at Stripe, sent to the pool

    def send(self, event_type: str, obj: dict[str, Any], subject: Any, *, at: int) -> Sent:
        number = len(self.delivered) + len(self.pool)
        sent = Sent(f"evt_{self.tag}_{number}", event_type, obj, at, subject)
        self.pool.append(sent)
        return sent

    def tick(self, seconds: int = 1) -> int:
        self.clock += seconds
        return self.clock

    @rule(
        who=st.integers(0, 1),
        pack=st.sampled_from(PACKS),
        paid_later=st.booleans(),
        at_once=st.booleans(),
    )
    def buy(self, who: int, pack: str, paid_later: bool, at_once: bool) -> None:
        """A pack bought at Checkout: paid at once, or an async payment that succeeds later."""
        account = self.accounts[who]
        number = len(self.purchases)
        obj = checkout_session(
            account, pack=pack, session_id=f"cs_{self.tag}_{number}",
            customer=self.customer(account), payment_status="unpaid" if paid_later else "paid",
        )  # fmt: skip
        purchase = Purchase(account, pack, obj, paid_at_stripe=True)
        self.purchases.append(purchase)
        at = self.tick()
        sent = [self.send("checkout.session.completed", obj, None if paid_later else purchase,
                          at=at)]  # fmt: skip
        if paid_later:
            paid = dict(obj, payment_status="paid", status="complete")
            sent.append(self.send("checkout.session.async_payment_succeeded", paid, purchase,
                                  at=self.tick(60)))  # fmt: skip
        self.maybe_at_once(at_once, sent)

    def maybe_at_once(self, at_once: bool, sent: list[Sent]) -> None:
        """Delivered as soon as sent, in order (else they wait in the pool for any order)."""
        for one in sent if at_once else []:
            self.delivers(one)

    def refundable(self) -> list[Purchase]:
        return [p for p in self.purchases if p.refunded_cents < p.cents and p.dispute is None]

    @precondition(lambda self: self.refundable())
    @rule(pick=st.integers(0, 99), part=st.integers(1, 100), at_once=st.booleans())
    def refund(self, pick: int, part: int, at_once: bool) -> None:
        """A partial or full refund: Stripe's charge.refunded carries the cumulative amount."""
        purchases = self.refundable()
        purchase = purchases[pick % len(purchases)]
        left = purchase.cents - purchase.refunded_cents
        purchase.refunded_cents += max(1, left * part // 100)
        obj = charge(purchase.payment_intent, purchase.cents, purchase.refunded_cents)
        sent = self.send("charge.refunded", obj, ("refund", purchase, purchase.refunded_cents),
                         at=self.tick())  # fmt: skip
        self.maybe_at_once(at_once, [sent])

    def disputable(self) -> list[Purchase]:
        return [p for p in self.purchases if p.refunded_cents < p.cents and p.dispute is None]

    @precondition(lambda self: self.disputable())
    @rule(pick=st.integers(0, 99), inquiry=st.booleans(), status=st.integers(0, 1),
          at_once=st.booleans())  # fmt: skip
    def dispute(self, pick: int, inquiry: bool, status: int, at_once: bool) -> None:
        """The customer disputes what is left of the payment (an inquiry takes nothing)."""
        purchases = self.disputable()
        purchase = purchases[pick % len(purchases)]
        dispute = Dispute(
            f"dp_{self.tag}_{self.purchases.index(purchase)}",
            purchase.cents - purchase.refunded_cents,
            inquiry,
        )
        purchase.dispute = dispute
        at = self.tick()
        opened = (INQUIRY if inquiry else FUNDS_WITHDRAWN)[status]
        sent = self.send("charge.dispute.created", stripe_dispute(
            purchase.payment_intent, dispute.amount, opened, dispute_id=dispute.dispute_id),
                         ("dispute.created", purchase), at=at)  # fmt: skip
        self.maybe_at_once(at_once, [sent])

    def open_disputes(self) -> list[Purchase]:
        return [p for p in self.purchases if p.dispute is not None and p.dispute.outcome is None]

    @precondition(lambda self: self.open_disputes())
    @rule(pick=st.integers(0, 99), won=st.booleans(), at_once=st.booleans())
    def close_dispute(self, pick: int, won: bool, at_once: bool) -> None:
        purchases = self.open_disputes()
        purchase = purchases[pick % len(purchases)]
        dispute = purchase.dispute
        assert dispute is not None
        dispute.outcome = "warning_closed" if dispute.inquiry else ("won" if won else "lost")
        at = self.tick(3600)
        obj = stripe_dispute(purchase.payment_intent, dispute.amount, dispute.outcome,
                             dispute_id=dispute.dispute_id)  # fmt: skip
        sent = self.send("charge.dispute.closed", obj, ("dispute.closed", purchase), at=at)
        self.maybe_at_once(at_once, [sent])

    @rule(who=st.integers(0, 1), move=st.integers(0, 9), cancel=st.booleans(),
          same_second=st.booleans())  # fmt: skip
    def subscription_moves(self, who: int, move: int, cancel: bool, same_second: bool) -> None:
        """The next step of a subscription's true lifecycle, as Stripe's events of one second.

        A step may share the previous step's second only when it moves forward in the
        lifecycle order (Stripe's `created` has one-second resolution)."""
        life = self.lives[self.accounts[who]]
        if life.status in FINAL:
            return
        moves = MOVES[life.status]
        _name, events, after = CANCEL if cancel and life.status else moves[move % len(moves)]
        forward = life.status is None or RANK[after] >= RANK[life.status]
        at = self.clock if same_second and forward and life.at else self.tick()
        for event_type, what in events:
            if event_type.startswith("invoice."):
                obj = invoice_object(life.customer, life.sub_id, billing_reason=what)
            else:
                obj = subscription_object(life.customer, what, sub_id=life.sub_id)
            life.sent.append(self.send(event_type, obj, ("subscription", life), at=at))
        life.status, life.at = after, at

    # -- deliveries

    @precondition(lambda self: self.pool)
    @rule(pick=st.integers(0, 99))
    def deliver(self, pick: int) -> None:
        """Stripe delivers one of the events it has sent, in any order."""
        self.delivers(self.pool[pick % len(self.pool)])

    def delivers(self, sent: Sent) -> None:
        self.pool.remove(sent)
        note(f"deliver {describe(sent)}")
        [recorded] = record(self.runtime.engine, self.incoming(sent))
        assert not recorded.duplicate
        sent.row_id = recorded.id
        self.delivered.append(sent)
        self.delivered_ids.add(sent.event_id)
        self.reference_applies(sent)
        self.process([recorded.id])

    @precondition(lambda self: self.delivered)
    @rule(pick=st.integers(0, 99))
    def deliver_again(self, pick: int) -> None:
        """Stripe delivers an event again (the same event id): nothing changes."""
        sent = self.delivered[pick % len(self.delivered)]
        note(f"deliver again {describe(sent)}")
        [recorded] = record(self.runtime.engine, self.incoming(sent))
        assert recorded.duplicate and recorded.id == sent.row_id
        self.process([recorded.id])

    @precondition(lambda self: self.delivered)
    @rule(pick=st.integers(0, 99))
    def replay(self, pick: int) -> None:
        """An operator replays a done row: nothing changes; a purged row is not replayed."""
        sent = self.delivered[pick % len(self.delivered)]
        note(f"replay {describe(sent)}")
        with transaction(self.runtime.sessions) as session:
            status = session.get_one(WebhookEvent, sent.row_id).status
            if status != Status.DONE:
                return
            put_back = operator_writes.replay(session, [sent.row_id], now=utcnow())
        assert put_back == ([] if sent.row_id in self.purged else [sent.row_id])
        self.process(put_back)

    @precondition(lambda self: self.delivered)
    @rule()
    def purge(self) -> None:
        """An operator purges finished rows: their bodies go, their effects stay."""
        with transaction(self.runtime.sessions) as session:
            done = set(session.scalars(select(WebhookEvent.id).where(
                WebhookEvent.id.in_([s.row_id for s in self.delivered]),
                WebhookEvent.status.in_([Status.DONE.value, Status.SKIPPED.value]),
            )))  # fmt: skip
            operator_writes.purge(session, older_than=utcnow() + timedelta(seconds=1), now=utcnow())
        self.purged |= done

    def incoming(self, sent: Sent) -> store.IncomingEvent:
        body = stripe_event_body(sent.obj, sent.event_type, event_id=sent.event_id,
                                 created=sent.created)  # fmt: skip
        return incoming_stripe_event(
            body, {"content-type": "application/json"}, "stripe#0",
            self.runtime.settings.stripe_mode,
        )  # fmt: skip

    def process(self, ids: list[int]) -> None:
        """A processing pass for these rows; then, while rows get done, time passes for the
        rows that wait (a refund waits for its purchase, and is applied once it is granted)."""
        counts = process_pass(self.runtime, ids)
        mine = [s.row_id for s in self.delivered]
        while Outcome.DONE in counts:
            with transaction(self.runtime.sessions) as session:
                waiting = list(session.scalars(
                    update(WebhookEvent)
                    .where(WebhookEvent.id.in_(mine), WebhookEvent.status == Status.PENDING.value)
                    .values(next_attempt_at=utcnow() - timedelta(seconds=1))
                    .returning(WebhookEvent.id)
                ))  # fmt: skip
            counts = process_pass(self.runtime, waiting) if waiting else {}

    # -- the reference applying Stripe's events

    def reference_applies(self, sent: Sent) -> None:
        subject = sent.subject
        if isinstance(subject, Purchase):
            self.grant(subject)
        elif isinstance(subject, tuple) and subject[0] != "subscription":
            purchase = subject[1]
            if purchase.granted:
                self.take_back(sent)
            else:
                purchase.waiting.append(sent)

    def grant(self, purchase: Purchase) -> None:
        if purchase.granted:
            return
        purchase.granted = True
        self.books[purchase.account].credit(purchase.credits)
        for sent in purchase.waiting:
            self.take_back(sent)
        purchase.waiting.clear()

    def take_back(self, sent: Sent) -> None:
        kind, purchase = sent.subject[0], sent.subject[1]
        books = self.books[purchase.account]
        if kind == "refund":
            more = share(purchase.credits, sent.subject[2], purchase.cents) - purchase.refund_taken
            more = min(more, purchase.left_to_take())
            if more > 0:
                purchase.refund_taken += more
                books.take(more)
            return
        dispute = purchase.dispute
        assert dispute is not None
        status = sent.obj["status"]
        if kind == "dispute.created":
            dispute.created_applied = True
            if status in FUNDS_WITHDRAWN and not dispute.closed_applied:
                self.dispute_takes(purchase, dispute)
            return
        first = not dispute.closed_applied
        dispute.closed_applied = True
        if status == "won" and first and dispute.taken > 0:
            books.credit(dispute.taken)
            dispute.taken = ZERO
        elif status == "lost" and first and not dispute.created_applied:
            self.dispute_takes(purchase, dispute)  # lost: the money is gone, whatever came first

    def dispute_takes(self, purchase: Purchase, dispute: Dispute) -> None:
        if dispute.taken > 0:
            return
        amount = min(share(purchase.credits, dispute.amount, purchase.cents),
                     purchase.left_to_take())  # fmt: skip
        if amount > 0:
            dispute.taken = amount
            self.books[purchase.account].take(amount)
