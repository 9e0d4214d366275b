"""`outbox receive FILE`: a payload run through the handlers in this process, no HTTP.

For someone writing a handler (docs/handlers.md): the payload is stored as the ingress
would store it (no signature: the file is the operator's), then applied now by every
handler registered for its type, as a worker applies it; the command prints the outcome
and the effect rows the event left. By default all of this happens in a throwaway SQLite
database, migrated for the run and deleted after it; `--configured-database` uses
DATABASE_URL instead, where the event and its effects stay.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from outbox.cli.common import (
    EXIT_FAILED,
    JSON_OPTION,
    fail,
    friendly_errors,
    get_settings,
    print_json_lines,
    say,
    usage_error,
    visible,
)

if TYPE_CHECKING:
    from outbox.settings import Settings
    from outbox.store import IncomingEvent
    from processors.receive import Received

#: What a GitHub event name looks like (the X-GitHub-Event header: `issue_comment`).
GITHUB_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_FILE_BYTES = 25 * 1024 * 1024  #: GitHub's cap on a webhook payload
#: `verified_by` of a received row: no secret vouched for it, the operator's file did.
RECEIVED_BY = "outbox receive"


def register(app: typer.Typer) -> None:
    app.command()(receive)


@friendly_errors
def receive(
    file: Path = typer.Argument(
        ..., help="A webhook body: a GitHub payload (with --event) or a Stripe event."
    ),
    event: str | None = typer.Option(
        None,
        "--event",
        help="GitHub's event name, as its X-GitHub-Event header says (issue_comment); "
        "without it the file must be a Stripe event.",
    ),
    configured_database: bool = typer.Option(
        False,
        "--configured-database",
        help="Store and apply it in DATABASE_URL, where its effects stay, instead of a "
        "throwaway SQLite database.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run a payload through the handlers in this process and print what it did.

    The event is stored as the ingress stores a delivery, then applied at once by every
    handler registered for its type (HANDLER_TABLE and installed packages' entry points),
    as a worker applies it. Exit 1 when a handler failed (the event is then pending or
    dead, as a worker would leave it).
    """
    body = _read(file)
    settings = get_settings()
    incoming = _incoming(body, event, settings)
    with _database(settings, keep=configured_database) as run_settings:
        received, effects = _store_and_apply(run_settings, incoming)
    where = "configured database" if configured_database else "throwaway database"
    if as_json:
        print_json_lines([{**_as_json(received, incoming), "database": where, "effects": effects}])
    else:
        _print(received, incoming, effects, where)
    if received.outcome not in ("done", "skipped"):
        raise typer.Exit(EXIT_FAILED)


def _read(file: Path) -> bytes:
    try:
        with file.open("rb") as opened:
            body = opened.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        usage_error(f"cannot read {visible(str(file))}: {exc.strerror or exc}")
    if len(body) > MAX_FILE_BYTES:
        usage_error(f"{visible(str(file))} is over {MAX_FILE_BYTES} bytes, more than a webhook")
    return body


def _incoming(body: bytes, event: str | None, settings: Settings) -> IncomingEvent:
    """The row the ingress would store for `body`; exit 2 for what no webhook can be."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        usage_error(f"the file is not JSON: {exc}")
    if not isinstance(payload, dict):
        usage_error("the file is not a JSON object, as every webhook body is")
    headers = {"content-type": "application/json"}
    if event is not None:
        if not GITHUB_EVENT_NAME.fullmatch(event):
            usage_error(f"--event {visible(event)[:70]!r} is not a GitHub event name")
        from ingress.github import github_event

        return github_event(body, headers, f"receive-{uuid.uuid4()}", event, RECEIVED_BY)
    if payload.get("object") != "event" or not isinstance(payload.get("type"), str):
        usage_error(
            "not a Stripe event (no object: event with a type); "
            "for a GitHub payload give --event NAME (issue_comment, …)"
        )
    from outbox.store import DeliveryIdNotStorable
    from outbox.stripe_events import incoming_stripe_event

    try:
        incoming = incoming_stripe_event(body, headers, RECEIVED_BY, settings.stripe_mode)
    except DeliveryIdNotStorable as exc:
        usage_error(str(exc))
    if incoming.reason is not None and incoming.status.value == "dead":
        usage_error(f"not a usable Stripe event: {incoming.reason}")
    return incoming


@contextmanager
def _database(settings: Settings, *, keep: bool) -> Iterator[Settings]:
    """The settings of the run: DATABASE_URL's, or a throwaway SQLite database's."""
    if keep:
        yield settings
        return
    import tempfile

    from outbox.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="outbox-receive-") as folder:
        url = f"sqlite:///{Path(folder) / 'outbox.db'}"
        upgrade(url)
        yield settings.model_copy(update={"database_url": url})


def _store_and_apply(
    settings: Settings, incoming: IncomingEvent
) -> tuple[Received, list[dict[str, Any]]]:
    from domain.effects import effects_of_event
    from outbox import store
    from outbox.cli.database import open_database
    from outbox.db import utcnow
    from outbox.dispatch import load_handler_table
    from outbox.models import Status
    from processors.receive import Received, apply_now
    from processors.runtime import Runtime

    load_handler_table(settings)  # a broken table or entry point: one line, nothing stored
    with open_database(settings) as (engine, sessions):
        with engine.begin() as conn:
            [recorded] = store.record(conn, [incoming], utcnow())
        if recorded.duplicate:
            fail(
                f"{incoming.source} delivery {visible(incoming.delivery_id)} is already stored "
                f"as event {recorded.id} ({recorded.status}); "
                f"`outbox events replay {recorded.id}` applies it again"
            )
        if recorded.status != Status.PENDING:  # stored finished: the other Stripe mode
            received = Received(recorded.id, recorded.status, None, incoming.reason)
        else:
            received = apply_now(Runtime(settings, engine), recorded.id)
        with sessions() as session:
            effects = effects_of_event(session, recorded.id)
    return received, effects


def _as_json(received: Received, incoming: IncomingEvent) -> dict[str, Any]:
    return {
        "id": received.event_id,
        "source": incoming.source,
        "event_type": incoming.event_type,
        "delivery_id": incoming.delivery_id,
        "outcome": received.outcome,
        "handler": received.handler,
        "note": received.note,
    }


def _print(
    received: Received, incoming: IncomingEvent, effects: list[dict[str, Any]], where: str
) -> None:
    from outbox.cli.event_display import effect_line

    say(
        f"event {received.event_id}  {incoming.source} {incoming.event_type}: "
        f"{received.outcome}  ({where})"
    )
    if received.handler is not None:
        say(f"handler  {received.handler}")
    if received.note is not None:
        label = "error" if received.outcome not in ("done", "skipped") else "note"
        say(f"{label}  {received.note}")
    say(f"effects ({len(effects)})")
    for effect in effects:
        say(f"  {effect_line(effect)}")
