"""Fixtures of the domain tests: `world` (an installed App, fake GitHub and Stripe) for PR jobs."""

import pytest

# Helper modules with asserts of their own: rewritten as test modules are, a failure shows
# its values.
pytest.register_assert_rewrite(
    "tests.domain.jobs_world",
    "tests.domain.github_support",
    "tests.domain.billing_model_stripe",
    "tests.domain.billing_model_accounts",
)

from tests.domain.jobs_world import world  # noqa: E402, F401
