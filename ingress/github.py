"""GitHub App webhooks: from a request to the row that stores it (`delivery_reader`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ingress.errors import HeaderMissing, NotConfigured
from ingress.signatures import verify_github
from outbox.fields import as_int64, as_text, dig
from outbox.models import Source, Status
from outbox.payload import UnreadablePayload, peek_body
from outbox.store import IncomingEvent

KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "x-github-delivery",
    "x-github-event",
    "x-github-hook-id",
    "x-github-hook-installation-target-id",
    "x-github-hook-installation-target-type",
    "x-hub-signature-256",
)
MAX_HEADER_ID = 255  #: characters; longer delivery ids or event names are not GitHub's
_HTTP_BLANKS = " \t"  #: what HTTP trims around a header value (RFC 9110, 5.5)

#: Events whose order matters per installation (added before removed, created before deleted).
_PER_INSTALLATION = {"installation", "installation_repositories", "github_app_authorization"}


def delivery_reader(secrets: Sequence[str]) -> Callable[[bytes, dict[str, str]], IncomingEvent]:
    """The GitHub route's reading of a request whose body is whole: its signature checked
    against `secrets` (GITHUB_WEBHOOK_SECRET's, several while one is rotated), its delivery
    id and event read from the headers, then the row. Raises the Rejection to answer."""

    def read(body: bytes, headers: dict[str, str]) -> IncomingEvent:
        if not secrets:
            raise NotConfigured("GITHUB_WEBHOOK_SECRET is not set")
        index = verify_github(body, headers.get("x-hub-signature-256"), secrets)
        delivery, event = required_headers(headers)
        return github_event(body, headers, delivery, event, f"github#{index}")

    return read


def required_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """The delivery id and event name, which every GitHub delivery carries.

    The delivery id is kept as sent (header bytes read as latin-1, one character each), so
    two distinct ids are never stored as one; only HTTP's own blanks are trimmed.
    """
    delivery = headers.get("x-github-delivery", "").strip(_HTTP_BLANKS)
    event = utf8_header(headers.get("x-github-event", "")).strip(_HTTP_BLANKS)
    if not delivery:
        raise HeaderMissing("X-GitHub-Delivery is missing")
    if not event:
        raise HeaderMissing("X-GitHub-Event is missing")
    if len(delivery) > MAX_HEADER_ID or len(event) > MAX_HEADER_ID:
        raise HeaderMissing("X-GitHub-Delivery or X-GitHub-Event is too long")
    return delivery, event


def utf8_header(value: str) -> str:
    """A header's text read as UTF-8 (request_headers reads bytes as latin-1)."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise HeaderMissing("X-GitHub-Event is not UTF-8") from None


def github_event(
    body: bytes, headers: Mapping[str, str], delivery: str, event: str, verified_by: str
) -> IncomingEvent:
    """The row for a verified GitHub delivery; a body that is not JSON is kept, marked dead."""
    kept = {name: headers[name] for name in KEPT_HEADERS if name in headers}
    try:
        payload = peek_body(body, headers.get("content-type"))
    except UnreadablePayload as exc:
        return IncomingEvent(
            source=Source.GITHUB,
            delivery_id=delivery,
            event_type=event,
            raw_body=body,
            headers=kept,
            verified_by=verified_by,
            hook_id=headers.get("x-github-hook-id"),
            status=Status.DEAD,
            reason=f"unprocessable: {exc}",
        )
    installation = as_int64(dig(payload, "installation", "id"))
    return IncomingEvent(
        source=Source.GITHUB,
        delivery_id=delivery,
        event_type=event_type(event, payload),
        raw_body=body,
        headers=kept,
        verified_by=verified_by,
        installation_id=installation,
        account_id=account_of(payload),
        object_id=object_of(event, payload, installation),
        hook_id=headers.get("x-github-hook-id"),
    )


def event_type(event: str, payload: dict[str, Any]) -> str:
    action = as_text(payload.get("action"))
    return f"{event}.{action}" if action else event


def account_of(payload: dict[str, Any]) -> int | None:
    """The user or organisation the event concerns: the installer, else the repository owner."""
    return as_int64(dig(payload, "installation", "account", "id")) or as_int64(
        dig(payload, "repository", "owner", "id")
    )


def object_of(event: str, payload: dict[str, Any], installation: int | None) -> str | None:
    """The object whose events are applied in order; `installation` is the payload's
    installation id (as_int64), read once by the caller."""
    if event in _PER_INSTALLATION and installation is not None:
        return f"installation:{installation}"
    pull_request = as_int64(dig(payload, "pull_request", "id"))
    if event == "pull_request" and pull_request is not None:
        return f"pull_request:{pull_request}"
    return None
