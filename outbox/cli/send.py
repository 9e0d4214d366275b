"""`outbox send`: sign a webhook as GitHub or Stripe would, and post it to an ingress.

What is sent is a built-in example named by its event (`outbox send github
pull_request.opened`, `outbox send --list`), a file, or every JSON file of a folder. All the
posts of one command go through one HTTP client, so a hundred take well under a second
against a local ingress; starting the command is most of the cost of a single send.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import typer

from outbox.cli.common import fail, friendly_errors, get_settings, usage_error
from outbox.cli.examples import Example, built_in, github_event_of
from outbox.cli.run import DEV_GITHUB_SECRET, DEV_STRIPE_SECRET

if TYPE_CHECKING:
    import httpx

PROVIDERS = ("github", "stripe")
STRIPE_API_VERSION = "2024-06-20"  #: the api_version of the Events built around objects
SHOWN_ANSWER = 200  #: characters of an answer printed; the rest is cut
NOT_JSON = object()  #: a Stripe body that does not parse, sent as it is


@dataclass(frozen=True)
class Webhook:
    """One payload to post: its bytes, where it came from, and its event (GitHub)."""

    label: str
    body: bytes
    github_event: str | None = None
    stripe_type: str | None = None  #: the type of the Event a bare Stripe object is put in
    document: Any = None  #: a Stripe body as read, or NOT_JSON


def register(app: typer.Typer) -> None:
    app.command()(send)


@friendly_errors
def send(
    provider: str | None = typer.Argument(None, help="github or stripe."),
    what: str | None = typer.Argument(
        None,
        help="A built-in example's name (see --list), a JSON file, or a folder of them.",
        show_default=False,
    ),
    list_examples: bool = typer.Option(
        False, "--list", help="List the built-in examples (of PROVIDER, or of both)."
    ),
    url: str = typer.Option(
        "http://127.0.0.1:8000",
        help="The ingress: its base URL, or the full route (…/webhooks/github).",
    ),
    event: str | None = typer.Option(
        None,
        help="GitHub event (X-GitHub-Event); default: the example's, or the file's folder "
        "in the layout github/<event>/<file>.",
    ),
    event_type: str | None = typer.Option(
        None, "--type", help="Stripe event type, to wrap a bare API object in an Event."
    ),
    delivery: str | None = typer.Option(
        None, help="Delivery id (GitHub) or event id (Stripe); default: a new one per send."
    ),
    count: int = typer.Option(1, help="Send each payload this many times, each a new delivery."),
) -> None:
    """Sign a webhook with the configured secret (the dev one when unset) and POST it."""
    if list_examples:
        _list(provider)
        return
    if provider is None or what is None:
        usage_error("give github or stripe and an example, a file or a folder (outbox send --list)")
    if provider not in PROVIDERS:
        usage_error(f"unknown provider {_printable(provider)!r}: github or stripe")
    if count < 1:
        usage_error("--count must be at least 1")
    target = route_url(url, provider)
    webhooks = list(_webhooks(provider, what, event, event_type))
    settings = get_settings()
    if provider == "github":
        secret = (settings.github_secrets or (DEV_GITHUB_SECRET,))[0]
    else:
        secret = (settings.stripe_secrets or (DEV_STRIPE_SECRET,))[0]
    _post_all(target, provider, secret, webhooks, count=count, delivery=delivery)


def _list(provider: str | None) -> None:
    if provider is not None and provider not in PROVIDERS:
        usage_error(f"unknown provider {_printable(provider)!r}: github or stripe")
    for name in (provider,) if provider else PROVIDERS:
        for example in built_in(name).values():
            typer.echo(f"{name}  {example.name}")


def route_url(url: str, provider: str) -> str:
    """The webhook route to post to: `url` itself when it is one, else its base plus the route."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        usage_error(f"--url must be an http(s) URL, not {_printable(url)!r}")
    path = parts.path.rstrip("/")
    for other in PROVIDERS:
        if path.endswith(f"/webhooks/{other}"):
            if other != provider:
                usage_error(
                    f"--url is the {other} route; a {provider} webhook goes to /webhooks/{provider}"
                )
            return urlunsplit(parts._replace(path=path))
    return urlunsplit(parts._replace(path=f"{path}/webhooks/{provider}"))


def _webhooks(
    provider: str, what: str, event: str | None, event_type: str | None
) -> Iterator[Webhook]:
    """What `what` names, each with its GitHub event known (or a usage error naming --event)."""
    path = Path(what)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        if not files:
            usage_error(f"no .json file in the folder {_printable(what)}")
        sources = [_from_file(p) for p in files]
    elif path.is_file():
        sources = [_from_file(path)]
    elif what in (examples := built_in(provider)):
        sources = [examples[what]]
    else:
        usage_error(
            f"no file, folder or built-in {provider} example named {_printable(what)!r} "
            f"(outbox send {provider} --list)"
        )
    for source in sources:
        body = _read(source.path)
        shown = source.name or _printable(str(source.path))
        if provider == "github":
            github_event = event or source.github_event
            if not github_event:
                usage_error(
                    f"cannot tell the GitHub event of {shown}: give --event "
                    "(e.g. --event pull_request), or keep the file as github/<event>/<file>"
                )
            label = shown if source.name and not event else f"{shown} ({github_event})"
            yield Webhook(label, body, github_event=github_event)
        else:
            stripe_type = event_type or source.stripe_type
            document = _parsed(body)
            if not stripe_type and document is not NOT_JSON and not _is_stripe_event(document):
                usage_error(f"{shown} is not a Stripe Event: give --type to wrap it in one")
            yield Webhook(shown, body, stripe_type=stripe_type, document=document)


def _from_file(path: Path) -> Example:
    return Example("", path, github_event=github_event_of(path.resolve()))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        usage_error(f"cannot read {_printable(str(path))}: {exc.strerror}")


def _post_all(
    target: str,
    provider: str,
    secret: str,
    webhooks: list[Webhook],
    *,
    count: int,
    delivery: str | None,
) -> None:
    import httpx

    from ingress.signatures import github_signature, stripe_signature

    started = time.perf_counter()
    sent = refused = 0
    with httpx.Client(timeout=30, headers={"User-Agent": "outbox-send"}) as client:
        for webhook in webhooks:
            for _ in range(count):
                if provider == "github":
                    body = webhook.body
                    delivery_id = delivery or str(uuid.uuid4())
                    headers = {
                        "X-GitHub-Event": webhook.github_event or "",
                        "X-GitHub-Delivery": delivery_id,
                        "X-Hub-Signature-256": github_signature(secret, body),
                        "Content-Type": "application/json",
                    }
                else:
                    # One copy keeps a Stripe Event's own id; more copies are new events each.
                    body, delivery_id = stripe_body(webhook, delivery, fresh=count > 1)
                    headers = {
                        "Stripe-Signature": stripe_signature(secret, body, int(time.time())),
                        "Content-Type": "application/json; charset=utf-8",
                    }
                response = _post(client, target, body, headers)
                sent += 1
                refused += not response.is_success
                typer.echo(
                    f"posted {webhook.label} to {target} as {_printable(delivery_id)}: "
                    f"{response.status_code} {_answer(response)}"
                )
    if sent > 1:
        seconds = time.perf_counter() - started
        typer.echo(f"sent {sent} in {seconds:.2f} s: {sent - refused} answered 2xx, {refused} not")
    if refused:
        raise typer.Exit(1)


def _post(
    client: httpx.Client, target: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    import httpx

    try:
        return client.post(target, content=body, headers=headers)
    except httpx.HTTPError as exc:
        fail(f"could not reach the ingress at {target}: {_printable(str(exc))}")


def stripe_body(webhook: Webhook, delivery: str | None, *, fresh: bool) -> tuple[bytes, str]:
    """The body to post and its event id: an Event as it is, a bare object wrapped in one.

    An Event keeps its id unless `delivery` names another or `fresh` asks for a new one. A
    body that is not JSON is sent as it is: the ingress stores it and marks it unprocessable.
    """
    document = webhook.document
    if document is NOT_JSON:
        return webhook.body, delivery or "(not JSON)"
    if _is_stripe_event(document):
        new_id = delivery or (_new_event_id() if fresh else None)
        if new_id is None:
            return webhook.body, str(document.get("id"))
        return _compact({**document, "id": new_id}), new_id
    event_id = delivery or _new_event_id()
    envelope = {
        "id": event_id,
        "object": "event",
        "api_version": STRIPE_API_VERSION,
        "created": int(time.time()),
        "data": {"object": document},
        "livemode": bool(document.get("livemode")) if isinstance(document, dict) else False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": webhook.stripe_type,
    }
    return _compact(envelope), event_id


def _parsed(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return NOT_JSON


def _is_stripe_event(document: Any) -> bool:
    return isinstance(document, dict) and document.get("object") == "event"


def _compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex[:24]}"


def _answer(response: httpx.Response) -> str:
    text = _printable(response.text.strip())
    return text if len(text) <= SHOWN_ANSWER else text[:SHOWN_ANSWER] + "…"


def _printable(text: str) -> str:
    """`text` with control characters escaped: file names and answers are not ours to trust."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
