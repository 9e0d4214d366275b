"""What the billing model (tests/domain/test_billing_model.py) keeps between its steps: its
accounts and their books by the rules, Stripe's events sent and delivered, the PR jobs and
the operators' adjustments."""

from __future__ import annotations

import itertools
import os
import random
from decimal import Decimal
from typing import Any

from hypothesis.stateful import RuleBasedStateMachine

from processors import runtime as runtimes
from tests.domain.billing_reference import ZERO, Books, Life, Purchase, Sent
from tests.domain.billing_support import NOW

_runs = itertools.count(1)


class ModelState(RuleBasedStateMachine):
    """The model's state, shared by its sides (billing_model_stripe.py,
    billing_model_accounts.py)."""

    #: Set by the test: the runtime (settings, engine, handlers) on the test's database.
    runtime: runtimes.Runtime

    def __init__(self) -> None:
        super().__init__()
        run = next(_runs)
        if run % 500 == 0 and "MODEL_EXAMPLES" in os.environ:
            print(f"billing model: {run} sequences run", flush=True)  # a long run's progress
        self.tag = f"m{os.getpid()}x{run}x{random.randrange(10**6)}"
        self.clock = 1_780_000_000  # Stripe's true seconds
        self.job_clock = NOW
        base = 500_000_000 + run * 10
        self.accounts = [base, base + 1]
        self.books = {a: Books() for a in self.accounts}
        self.purchases: list[Purchase] = []
        self.lives: dict[int, Life] = {}
        self.pool: list[Sent] = []  # sent by Stripe, not delivered yet
        self.delivered: list[Sent] = []
        self.delivered_ids: set[str] = set()
        self.purged: set[int] = set()
        self.jobs: dict[int, dict[str, Any]] = {}
        self.adjustments: list[tuple[str, int, Decimal]] = []
        #: The most debt an account had while it held credits for a job: Hypothesis steers
        #: towards sequences where refunds meet holds, which a uniform choice of steps rarely
        #: reaches.
        self.debt_while_held = ZERO

    def login(self, account: int) -> str:
        return f"acct{account}"

    def customer(self, account: int) -> str:
        return f"cus_{self.tag}_{account}"

    def repo(self, account: int) -> str:
        return f"acct{account}/work"
