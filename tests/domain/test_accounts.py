"""Accounts: each linked to one Stripe customer, and a customer to one account."""

from __future__ import annotations

import pytest

from domain.accounts import (
    CustomerAlreadyLinked,
    UnknownAccount,
    account_for_customer,
    link_customer,
)
from outbox.db import transaction
from tests.domain.billing_support import NOW, new_account


def test_accounts_link_one_stripe_customer_each(sessions):
    new_account(sessions, 1)
    new_account(sessions, 2, login="other")
    with transaction(sessions) as s:
        assert link_customer(s, 1, "cus_A", now=NOW)
        assert not link_customer(s, 1, "cus_A", now=NOW)
    with transaction(sessions) as s:
        assert account_for_customer(s, "cus_A").id == 1
        with pytest.raises(CustomerAlreadyLinked):
            link_customer(s, 2, "cus_A", now=NOW)
        with pytest.raises(CustomerAlreadyLinked):
            link_customer(s, 1, "cus_B", now=NOW)
        assert link_customer(s, 1, "cus_B", now=NOW, replace=True)
        with pytest.raises(UnknownAccount):
            link_customer(s, 99, "cus_C", now=NOW)
