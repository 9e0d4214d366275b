"""GitHub App events for the domain's tests: the corpus's payloads, as the processors hand
them to a handler, applied as the processors would (one event, one transaction)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from domain.handlers import handler_table
from outbox.handling import EventContext
from outbox.settings import Settings
from tests.conftest import CORPUS

GITHUB_CORPUS = CORPUS / "github"
NOW = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
#: The ids of the events built here (one counter, so no two share an id).
event_ids = itertools.count(1)


def example(relative: str) -> dict[str, Any]:
    return json.loads((GITHUB_CORPUS / relative).read_text())  # type: ignore[no-any-return]


def event_type_of(path: Path, payload: dict[str, Any]) -> str:
    action = payload.get("action")
    return f"{path.parent.name}.{action}" if isinstance(action, str) else path.parent.name


def context(
    event_type: str, payload: dict[str, Any], *, now: datetime = NOW, event_id: int | None = None
) -> EventContext:
    return EventContext(
        id=event_id or next(event_ids),
        source="github",
        delivery_id=f"delivery-{event_id}",
        event_type=event_type,
        payload=payload,
        livemode=None,
        provider_created_at=None,
        installation_id=None,
        stripe_account=None,
        account_id=None,
        attempts=1,
        backfilled=False,
        now=now,
    )


def apply(
    sessions: sessionmaker[Session], settings: Settings, event: EventContext
) -> bool:  # fmt: skip
    """Apply one event as the processors would (False: no handler, it would be skipped)."""
    handler = handler_table(settings).get(("github", event.event_type))
    if handler is None:
        return False
    with sessions() as session, session.begin():
        handler.apply(session, event, None)
    return True


def deliver(
    sessions: sessionmaker[Session], settings: Settings, relative: str, **kwargs: Any
) -> EventContext:
    payload = example(relative)
    event = context(event_type_of(GITHUB_CORPUS / relative, payload), payload, **kwargs)
    assert apply(sessions, settings, event)
    return event


CREATED_AT = 1557933591  #: seconds; the corpus installation's created_at


def about_installation(
    relative: str, *, created: int = CREATED_AT, updated: int = CREATED_AT, **changes: Any
) -> dict[str, Any]:
    """A corpus payload about the corpus's installation 957387, with GitHub's times set."""
    payload = example(relative)
    installation = example("installation/created.payload.json")["installation"]
    payload["installation"] = {
        **installation, "created_at": created, "updated_at": updated, **changes
    }  # fmt: skip
    return payload
