"""Fixtures of the domain tests: `world` (an installed App, fake GitHub and Stripe) for PR jobs."""

import pytest

pytest.register_assert_rewrite("tests.domain.jobs_world")

from tests.domain.jobs_world import world  # noqa: E402, F401
