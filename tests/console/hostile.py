"""Events whose every stored string is an attack on the page that shows it: markup, attribute
breakers, template syntax, control characters and bidi overrides (no NUL: Postgres text
refuses it; the payload carries one, escaped in its JSON)."""

from __future__ import annotations

import json

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from outbox.store import IncomingEvent
from tests.cli.conftest import kill
from tests.factories import record

SCRIPT = "<script>window.__pwned=1;alert(1)</script>"
IMG = '"><img src=x onerror="window.__pwned=2;alert(2)">'
ATTRIBUTE = "' autofocus onfocus='window.__pwned=3' x='"
SVG = "<svg onload=alert(4)>"
TEMPLATE = "{{ 7*7 }}{% raw %}"
CONTROLS = "\x1b[31mred\x1b[0m\x07\x08\x7f\u202egnp.exe\u2066"
#: Everything at once, the way one field of a webhook could carry it.
ALL = SCRIPT + IMG + ATTRIBUTE + SVG + TEMPLATE + CONTROLS


def store_hostile(engine: Engine, sessions: sessionmaker[Session]) -> list[int]:
    """Two dead events of one hostile object, every string hostile; their ids, oldest first."""
    payload = {"id": "evt_x", "html": ALL, "nul": "\x00", "nested": {SCRIPT: [IMG, CONTROLS]}}
    events = [
        IncomingEvent(
            source="stripe",
            delivery_id=f"{IMG}{n}{CONTROLS}"[:255],
            event_type=f"{SCRIPT}{ATTRIBUTE}"[:255],
            raw_body=json.dumps(payload).encode(),
            headers={"content-type": "application/json", "x-evil": ALL, IMG: SCRIPT},
            verified_by="stripe#0",
            object_id=f"{SVG}{ATTRIBUTE}"[:255],
            account_id=None,
        )
        for n in range(2)
    ]
    ids = [result.id for result in record(engine, *events)]
    for event_id in ids:
        kill(sessions, event_id, error=f"boom {ALL}\nsecond line {SCRIPT}")
    return ids
