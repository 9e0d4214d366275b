"""The billing model's reference (tests/domain/test_billing_model.py): the money and
subscription rules restated on plain numbers, never asking the service what to expect; and
Stripe's side, true timelines whose events the model delivers in any order."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from domain.credits import QUANTUM
from tests.domain.billing_support import PACK_CENTS, PACK_CREDITS

ZERO = Decimal(0)


# --- the reference ---------------------------------------------------------------------


@dataclass
class Books:
    """An account's credits as the rules say they must be."""

    balance: Decimal = ZERO
    debt: Decimal = ZERO
    holds: dict[int, Decimal] = field(default_factory=dict)  # job id -> open hold

    @property
    def held(self) -> Decimal:
        return sum(self.holds.values(), ZERO)

    @property
    def available(self) -> Decimal:
        return self.balance - self.held

    def credit(self, amount: Decimal) -> None:
        """Any credit pays outstanding debt first; the rest reaches the balance."""
        paid = min(self.debt, amount)
        self.debt -= paid
        self.balance += amount - paid

    def take(self, amount: Decimal) -> None:
        """A refund or dispute: from what is available first, the rest becomes debt."""
        taken = min(amount, self.available)
        self.balance -= taken
        self.debt += amount - taken

    def release(self, job_id: int) -> None:
        """A failed job's hold pays outstanding debt first; only the rest becomes available."""
        amount = self.holds.pop(job_id)
        settled = min(amount, self.debt)
        self.balance -= settled
        self.debt -= settled

    def capture(self, job_id: int) -> None:
        self.balance -= self.holds.pop(job_id)


def share(credits: Decimal, part: int, whole: int) -> Decimal:
    """The credits `part` of `whole` minor units stands for (rounded half up, 4 places)."""
    fraction = Decimal(min(part, whole)) / Decimal(whole)
    return (credits * fraction).quantize(QUANTUM, rounding=ROUND_HALF_UP)


#: Subscription statuses in Stripe's lifecycle order: among events of one `created` second,
#: the later status in this order is where Stripe ended. Final statuses are never left.
#: https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses
RANK = {
    "incomplete": 0, "trialing": 1, "active": 2, "past_due": 3, "unpaid": 4, "paused": 5,
    "canceled": 6, "incomplete_expired": 6,
}  # fmt: skip
FINAL = {"canceled", "incomplete_expired"}
FUNDS_WITHDRAWN = ("needs_response", "under_review")
INQUIRY = ("warning_needs_response", "warning_under_review")


# --- Stripe's side: true timelines and their events -------------------------------------


@dataclass
class Sent:
    """One Stripe event, sent and not yet (or already) delivered."""

    event_id: str
    event_type: str
    obj: dict[str, Any]
    created: int
    #: What the reference does when it is applied (None: nothing).
    subject: Any = None
    row_id: int = 0  # its outbox row, once delivered


@dataclass
class Dispute:
    dispute_id: str
    amount: int
    inquiry: bool
    outcome: str | None = None  # won / lost / warning_closed, once closed at Stripe
    created_applied: bool = False
    closed_applied: bool = False
    taken: Decimal = ZERO  # credits it holds back now


@dataclass
class Purchase:
    account: int
    pack: str
    session: dict[str, Any]
    paid_at_stripe: bool = False
    granted: bool = False
    refunded_cents: int = 0  # Stripe's cumulative refunded amount
    refund_taken: Decimal = ZERO  # credits refunds took back
    dispute: Dispute | None = None
    waiting: list[Sent] = field(default_factory=list)  # refunds/disputes before the grant

    @property
    def cents(self) -> int:
        return PACK_CENTS[self.pack]

    @property
    def credits(self) -> Decimal:
        return PACK_CREDITS[self.pack]

    @property
    def payment_intent(self) -> str:
        return str(self.session["payment_intent"])

    def left_to_take(self) -> Decimal:
        return self.credits - self.refund_taken - (self.dispute.taken if self.dispute else ZERO)


@dataclass
class Life:
    """One subscription's true Stripe timeline."""

    sub_id: str
    account: int
    customer: str
    status: str | None = None
    at: int = 0
    sent: list[Sent] = field(default_factory=list)


#: The lifecycle moves Stripe makes, from a status: (name, events, status after). Each event
#: is (type, the object's status or the invoice's billing_reason), all in one second.
#: https://docs.stripe.com/billing/subscriptions/webhooks#events
#: https://docs.stripe.com/api/invoices/object#invoice_object-billing_reason
MOVES: dict[str | None, list[tuple[str, list[tuple[str, str]], str]]] = {
    None: [
        ("sign up, paid", [("customer.subscription.created", "incomplete"),
                           ("invoice.paid", "subscription_create"),
                           ("customer.subscription.updated", "active")], "active"),
        ("sign up, trial", [("customer.subscription.created", "trialing"),
                            ("invoice.paid", "subscription_create")], "trialing"),
        ("sign up, declined", [("customer.subscription.created", "incomplete"),
                               ("invoice.payment_failed", "subscription_create")], "incomplete"),
    ],
    "incomplete": [
        ("first invoice paid", [("invoice.paid", "subscription_create"),
                                ("customer.subscription.updated", "active")], "active"),
        ("expired", [("customer.subscription.updated", "incomplete_expired")],
         "incomplete_expired"),
    ],
    "trialing": [
        ("trial ends, paid", [("invoice.paid", "subscription_cycle"),
                              ("customer.subscription.updated", "active")], "active"),
        ("trial ends, declined", [("invoice.payment_failed", "subscription_cycle"),
                                  ("customer.subscription.updated", "past_due")], "past_due"),
        ("trial ends, no card", [("customer.subscription.updated", "paused")], "paused"),
    ],
    "active": [
        ("renewed", [("invoice.paid", "subscription_cycle"),
                     ("customer.subscription.updated", "active")], "active"),
        ("renewal declined", [("invoice.payment_failed", "subscription_cycle"),
                              ("customer.subscription.updated", "past_due")], "past_due"),
    ],
    "past_due": [
        ("retry declined", [("invoice.payment_failed", "subscription_cycle")], "past_due"),
        ("retry paid", [("invoice.paid", "subscription_cycle"),
                        ("customer.subscription.updated", "active")], "active"),
        ("retries exhausted", [("customer.subscription.updated", "unpaid")], "unpaid"),
    ],
    "unpaid": [
        ("paid at last", [("invoice.paid", "subscription_cycle"),
                          ("customer.subscription.updated", "active")], "active"),
    ],
    "paused": [
        ("resumed", [("customer.subscription.updated", "active")], "active"),
    ],
}  # fmt: skip
CANCEL = ("canceled", [("customer.subscription.deleted", "canceled")], "canceled")


def expected_status(life: Life, delivered: set[str]) -> tuple[bool, str | None]:
    """(known, status): the status the rules decide from the delivered events, when they
    decide it whatever the implementation does with partial news.

    All of a timeline's events delivered: where Stripe ended. Only subscription objects
    delivered (or invoices all older than the newest object): the newest object, ties by
    lifecycle order. Otherwise an invoice's news is still ahead of the objects: not checked.
    """
    arrived = [s for s in life.sent if s.event_id in delivered]
    if len(arrived) == len(life.sent):
        return True, life.status
    objects = [s for s in arrived if not s.event_type.startswith("invoice.")]
    invoices = [s for s in arrived if s.event_type.startswith("invoice.")]
    if not objects:
        return (True, None) if not invoices else (False, None)
    newest = max(objects, key=lambda s: (s.created, RANK[s.obj["status"]]))
    if all(s.created < newest.created for s in invoices):
        return True, newest.obj["status"]
    return False, None


def describe(sent: Sent) -> str:
    """An event as a failing example shows it: type, what it says, its second."""
    obj = sent.obj
    says = {
        "checkout.session.completed": obj.get("payment_status"),
        "charge.refunded": f"{obj.get('amount_refunded')} of {obj.get('amount')}",
        "invoice.paid": obj.get("billing_reason"),
        "invoice.payment_failed": obj.get("billing_reason"),
    }.get(sent.event_type, obj.get("status"))
    return f"{sent.event_type} ({says}) {obj.get('id')} created {sent.created}"
