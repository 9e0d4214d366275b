"""`outbox send`: sign a payload file as GitHub or Stripe would, and post it to an ingress."""

from __future__ import annotations

import json
import time
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from outbox.cli.common import fail, friendly_errors, usage_error
from outbox.cli.run import DEV_GITHUB_SECRET, DEV_STRIPE_SECRET
from outbox.settings import get_settings


class Provider(StrEnum):
    github = "github"
    stripe = "stripe"


def register(app: typer.Typer) -> None:
    app.command()(send)


@friendly_errors
def send(
    provider: Provider = typer.Argument(..., help="Who the webhook pretends to come from."),
    file: Path = typer.Argument(..., help="The JSON payload to sign and post."),
    url: str = typer.Option("http://127.0.0.1:8000", help="Base URL of the running ingress."),
    event: str | None = typer.Option(
        None, help="GitHub event name (X-GitHub-Event); default: the file's folder name."
    ),
    event_type: str | None = typer.Option(
        None, "--type", help="Stripe event type, to wrap a bare API object in an event."
    ),
    delivery: str | None = typer.Option(None, help="Delivery id; default: a new random one."),
) -> None:
    """Sign FILE with the configured webhook secret and POST it to the ingress."""
    import httpx

    from ingress.signatures import github_signature, stripe_signature

    if not file.is_file():
        usage_error(f"no such file: {file}")
    body = file.read_bytes()
    settings = get_settings()
    if provider is Provider.github:
        secret = (settings.github_secrets or (DEV_GITHUB_SECRET,))[0]
        headers = {
            "X-GitHub-Event": event or file.parent.name,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": github_signature(secret, body),
            "Content-Type": "application/json",
            "User-Agent": "outbox-send",
        }
    else:
        secret = (settings.stripe_secrets or (DEV_STRIPE_SECRET,))[0]
        body = _as_stripe_event(body, event_type, delivery)
        headers = {
            "Stripe-Signature": stripe_signature(secret, body, int(time.time())),
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "outbox-send",
        }
    target = f"{url.rstrip('/')}/webhooks/{provider.value}"
    try:
        response = httpx.post(target, content=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"could not reach the ingress at {target}: {exc}")
    typer.echo(f"{response.status_code} {response.text}")
    if not response.is_success:
        raise typer.Exit(1)


def _as_stripe_event(body: bytes, event_type: str | None, delivery: str | None) -> bytes:
    """The file as it is when it is an Event; a bare object is wrapped in one (needs --type)."""
    try:
        document: Any = json.loads(body)
    except ValueError:
        return body  # sent as it is: the ingress stores it and marks it unprocessable
    if isinstance(document, dict) and document.get("object") == "event":
        if delivery:
            document["id"] = delivery
            return json.dumps(document).encode()
        return body
    if not event_type:
        usage_error("the file is not a Stripe event; give --type to wrap it in one")
    envelope = {
        "id": delivery or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "data": {"object": document},
        "livemode": bool(document.get("livemode")) if isinstance(document, dict) else False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    return json.dumps(envelope, separators=(",", ":")).encode()
