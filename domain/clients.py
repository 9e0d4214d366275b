"""The GitHub and Stripe API clients, built once from the settings, both over httpx.

Neither SDK retries on its own: a retry is the processors' decision (outbox/retry.py),
recorded on the row, never a second schedule hidden inside a client.
"""

from __future__ import annotations

from functools import lru_cache

import httpx
import stripe
from githubkit import AppAuthStrategy, GitHub

from outbox.settings import Settings


class NotConfigured(RuntimeError):
    """An API client was asked for, but the settings it needs are missing."""


def stripe_client(settings: Settings) -> stripe.StripeClient:
    """A Stripe client on httpx (so respx sees it), against STRIPE_API_BASE, without retries.

    A call waits at most PROVIDER_TIMEOUT_SECONDS to connect and then for each read: a
    Stripe that accepts and never answers fails the attempt, which the retry policy retries.
    """
    if settings.stripe_api_key is None:
        raise NotConfigured("STRIPE_API_KEY is not set")
    base = settings.stripe_api_base.rstrip("/")
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        http_client=stripe.HTTPXClient(
            timeout=settings.provider_timeout_seconds, allow_sync_methods=True
        ),
        base_addresses={"api": base, "meter_events": base, "files": base, "connect": base},
        max_network_retries=0,
    )


def github_app(settings: Settings) -> GitHub[AppAuthStrategy]:
    """The GitHub App's client (App JWT); `.with_auth(auth.as_installation(id))` for a repo's."""
    return _github_app(
        settings.github_app_id,
        settings.github_private_key(),
        settings.github_api_url,
        settings.provider_timeout_seconds,
    )


@lru_cache(maxsize=4)
def _github_app(
    app_id: str | None, private_key: str | None, api_url: str, timeout: float
) -> GitHub[AppAuthStrategy]:
    # One client per process, so installation tokens are minted once and reused until they expire.
    if not app_id or not private_key:
        raise NotConfigured("GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY(_FILE) must be set")
    return GitHub(
        AppAuthStrategy(app_id, private_key),
        base_url=api_url.rstrip("/") + "/",
        auto_retry=False,
        http_cache=False,
        timeout=timeout,  # to connect, then for each read: one that never comes fails the call
        transport=_TimedTransport(timeout),
    )


class _TimedTransport(httpx.HTTPTransport):
    """httpx's transport, timing out requests that come without a timeout of their own.

    githubkit builds the installation-token request itself, outside its client, so that
    request had no timeout: a GitHub that accepted it and never answered held the job's
    lease and the worker's thread for good.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = httpx.Timeout(timeout).as_dict()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions.setdefault("timeout", self._timeout)
        return super().handle_request(request)
