"""Stored strings reach the page as text: escaped, control characters made visible, never
markup, on every page that shows them (the browser test shows nothing runs)."""

from __future__ import annotations

import re
from urllib.parse import quote

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from tests.console.hostile import CONTROLS, IMG, SCRIPT, SVG, store_hostile

RAW = (SCRIPT, IMG, SVG, 'onerror="', "<img", "<svg onload", "\x1b", "\x07", "\u202e")


def pages_of(ids: list[int]) -> list[str]:
    first = ids[0]
    return [
        "/",
        "/events",
        "/events?status=dead",
        f"/events?type={quote('<script>*')}",
        f"/events/{first}",
        f"/replay?id={first}&id={ids[1]}",
        "/replay?status=dead",
    ]


def test_hostile_strings_are_text_on_every_page(
    client: TestClient, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    ids = store_hostile(engine, sessions)
    for path in pages_of(ids):
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        body = answer.text
        for raw in RAW:
            assert raw not in body, (path, raw)
        assert "&lt;script&gt;" in body, path


def test_the_event_page_shows_every_hostile_field_as_written(
    client: TestClient, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    ids = store_hostile(engine, sessions)
    body = client.get(f"/events/{ids[0]}").text
    assert body.count("&lt;script&gt;window.__pwned=1;alert(1)&lt;/script&gt;") >= 4
    assert "&#34;&gt;&lt;img src=x onerror=&#34;" in body
    assert "\\x1b[31mred\\x1b[0m\\x07\\x08\\x7f\\u202egnp.exe\\u2066" in body
    assert "{{ 7*7 }}{% raw %}" in body  # template syntax printed, never evaluated
    assert "\\u0000" in body  # the payload's NUL, as JSON writes it
    # The timeline holds both events of the hostile object, each linked by its id alone.
    timeline = body.split('id="timeline"')[1]
    assert re.findall(r'href="/events/(\d+)"', timeline) == [str(i) for i in ids]


def test_a_hostile_delivery_id_finds_its_event_through_the_url(
    client: TestClient, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    ids = store_hostile(engine, sessions)
    delivery = f"{IMG}0{CONTROLS}"
    answer = client.get(f"/events/{quote(delivery, safe='')}")
    assert answer.status_code == 200
    assert f"Event {ids[0]}" in answer.text
