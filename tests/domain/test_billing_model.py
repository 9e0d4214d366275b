"""Model-based: random sequences of Stripe deliveries (in any order, duplicated, replayed,
purged), PR jobs and operator adjustments, applied by the real outbox, processors and
domain on a real database, leave every account where a small reference model says.

The reference (billing_reference.py) restates the money and subscription rules on plain
numbers; it never calls the service to compute what to expect. Stripe's side
(billing_model_stripe.py) is a true timeline (what Stripe does, second by second); its events
go into a pool and are delivered in whatever order the test picks, each through
`store.record` and a processing pass, as the ingress and the worker would. Operators'
adjustments and PR jobs are the account side (billing_model_accounts.py).

CI runs a fixed budget; MODEL_EXAMPLES and MODEL_STEPS raise it, MODEL_SEED replays a run
(the seed is printed with every run, and Hypothesis prints the failing steps).
"""

from __future__ import annotations

import os
import random
from decimal import Decimal

import hypothesis
import pytest
from hypothesis import HealthCheck, Phase, seed, target
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant

from domain import balances
from domain.account_opening import ensure_account
from domain.accounts import link_customer
from domain.installation_repositories import RepositoryFacts, add_repositories
from domain.installations import InstallationFacts, record_installation
from domain.packs import load_packs, read_pack_file
from domain.subscriptions import Subscription
from outbox.db import transaction
from outbox.models import Base
from processors import runtime as runtimes
from tests.domain.billing_model_accounts import AccountSide
from tests.domain.billing_model_stripe import StripeSide
from tests.domain.billing_reference import ZERO, Life, expected_status
from tests.domain.billing_support import NOW, SEED_PACKS

EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "12"))  #: examples per backend in CI
STEPS = int(os.environ.get("MODEL_STEPS", "40"))  #: steps an example takes at most
#: Hypothesis's phases: no `explain` (it traces every line, many times slower on this test);
#: MODEL_SHRINK=0 reports the failing sequence as found, without shrinking it.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target] + (
    [Phase.shrink] if os.environ.get("MODEL_SHRINK", "1") != "0" else []
)


class BillingModel(StripeSide, AccountSide):
    """Two accounts, each with a Stripe customer and a repository; after every step their
    credits and subscriptions are where the reference says."""

    # -- set up

    @initialize(welcome=st.sampled_from([ZERO, Decimal(10)]))
    def open_accounts(self, welcome: Decimal) -> None:
        """Two accounts, each with a Stripe customer and an installed repository."""
        sessions = self.runtime.sessions
        with transaction(sessions) as session:
            load_packs(session, read_pack_file(SEED_PACKS), now=NOW)
        for n, account in enumerate(self.accounts):
            with transaction(sessions) as session:
                ensure_account(
                    session, account, login=self.login(account), now=NOW, welcome_credits=welcome
                )
                link_customer(session, account, self.customer(account), now=NOW)
                facts = InstallationFacts(
                    account, account, self.login(account), "User", 1, "selected", {}, False
                )
                record_installation(session, facts, now=NOW, event_id=None)
                add_repositories(
                    session, account, [RepositoryFacts(account * 10 + n, self.repo(account),
                                                       False)],
                    now=NOW, event_id=None,
                )  # fmt: skip
            if welcome:
                self.books[account].credit(welcome)
            self.lives[account] = Life(f"sub_{self.tag}_{n}", account, self.customer(account))

    # -- what must hold after every step

    def teardown(self) -> None:
        target(float(self.debt_while_held), label="debt while credits are held")
        # Every example starts on empty tables: rows left by the earlier ones would only make
        # the later ones slower (a long run's thousandth example would read through them).
        with transaction(self.runtime.sessions) as session:
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(table.delete())

    @invariant()
    def accounts_match_the_reference(self) -> None:
        for books in self.books.values():
            self.debt_while_held = max(self.debt_while_held, min(books.held, books.debt))
        with self.runtime.sessions() as session:
            for account, books in self.books.items():
                now = balances.standing(session, account)
                assert now.balance >= 0 and now.debt >= 0 and now.available >= 0, (account, now)
                found = (now.balance, now.available, now.debt)
                wanted = (books.balance, books.available, books.debt)
                assert found == wanted, (
                    f"account {account}: (balance, available, debt) is {found}, "
                    f"the rules say {wanted}"
                )
                life = self.lives[account]
                known, status = expected_status(life, self.delivered_ids)
                if known:
                    row = session.get(Subscription, life.sub_id)
                    found_status = row.status if row is not None else None
                    assert found_status == status, (
                        f"subscription {life.sub_id}: {found_status}, Stripe says {status}"
                    )


#: A failing run shrinks its sequence for up to Hypothesis's 300 s: the test's own timeout
#: leaves it room, so the failing steps and the seed are always printed.
#: The CI budget's run, shrinking included, ends well within 900 s; a long run (MODEL_EXAMPLES
#: raised) has no time limit of its own.
@pytest.mark.timeout(0 if "MODEL_EXAMPLES" in os.environ else 900)
def test_billing_matches_the_reference_model_whatever_the_order(engine, settings) -> None:
    runtime = runtimes.configure(
        settings.model_copy(update={
            "stripe_api_base": "https://stripe.test",
            "retry_base_seconds": 3600.0,  # a waiting row is tried again when the test says
            "retry_max_attempts": 10_000,
            "lease_seconds": 300,
        }),
        engine=engine,
    )  # fmt: skip
    chosen = int(os.environ.get("MODEL_SEED") or random.randrange(2**32))
    print(f"billing model: seed {chosen} (rerun with MODEL_SEED={chosen})")
    machine = type("Machine", (BillingModel,), {"runtime": runtime})
    machine = seed(chosen)(machine)
    hypothesis.stateful.run_state_machine_as_test(
        machine,
        settings=hypothesis.settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            print_blob=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            phases=PHASES,
        ),
    )
