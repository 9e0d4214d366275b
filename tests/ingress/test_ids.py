"""Ids read off signed bodies and headers: ASCII digits only, stored exactly or refused.

A correctly signed body is always stored and answered 2xx; an id it carries that is not
an ASCII number within 64 bits counts as absent. A delivery or event id the store cannot
keep exactly is refused with 400, never cut or cleaned into another delivery's id.
"""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.stripe_objects import named_account
from outbox.handling import PermanentFailure
from outbox.models import WebhookEvent
from tests.factories import github_headers, stripe_event_body, stripe_headers

NOT_ASCII_NUMBERS = ["²", "①", "٣", "9" * 5000, "9223372036854775808", "-1"]


def _rows(engine) -> list[WebhookEvent]:
    with Session(engine) as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


@pytest.mark.parametrize("value", NOT_ASCII_NUMBERS)
def test_github_ids_that_are_not_ascii_numbers_are_absent_and_the_body_is_stored(
    client, engine, value
):
    payload = {
        "action": "created",
        "installation": {"id": value, "account": {"id": value}},
        "repository": {"owner": {"id": value}},
        "pull_request": {"id": value},
    }
    for event in ("installation", "pull_request"):
        body = json.dumps({**payload, "event": event}).encode()
        response = client.post(
            "/webhooks/github", content=body, headers=github_headers(body, event)
        )
        assert response.status_code == 200, response.text
    rows = _rows(engine)
    assert len(rows) == 2
    assert all(r.installation_id is None and r.account_id is None for r in rows)
    assert all(r.object_id is None for r in rows)


def test_github_ids_in_ascii_digits_are_read(client, engine):
    body = json.dumps({"installation": {"id": "77", "account": {"id": 5}}}).encode()
    response = client.post(
        "/webhooks/github", content=body, headers=github_headers(body, "installation")
    )
    assert response.status_code == 200
    [row] = _rows(engine)
    assert (row.installation_id, row.account_id, row.object_id) == (77, 5, "installation:77")


@pytest.mark.parametrize("value", NOT_ASCII_NUMBERS)
def test_stripe_ids_that_are_not_ascii_numbers_are_absent_and_the_event_is_stored(
    client, engine, value
):
    obj = {"id": "cs_1", "client_reference_id": value, "metadata": {"github_account_id": value}}
    body = json.loads(stripe_event_body(obj, "checkout.session.completed"))
    body["created"] = value
    raw = json.dumps(body).encode()
    response = client.post("/webhooks/stripe", content=raw, headers=stripe_headers(raw))
    assert response.status_code == 200, response.text
    [row] = _rows(engine)
    assert row.account_id is None and row.provider_created_at is None


@pytest.mark.parametrize("value", ["²", "٣", "9223372036854775808", "9" * 5000])
def test_the_processors_refuse_an_account_id_that_is_not_an_ascii_number(value):
    with pytest.raises(PermanentFailure):
        named_account({"client_reference_id": value})


def test_stripe_event_ids_the_store_cannot_keep_exactly_are_refused_never_merged(client, engine):
    long_id = "evt_" + "x" * 300
    for event_id in (long_id, long_id + "y", "evt_a\x00", "evt_a\ud800", "evt_a\udfff"):
        raw = json.dumps(json.loads(stripe_event_body({"id": "o"}, "x", event_id=event_id)))
        raw = raw.encode()
        response = client.post("/webhooks/stripe", content=raw, headers=stripe_headers(raw))
        assert response.status_code == 400, (event_id[-8:], response.text)
        assert "event id cannot be stored exactly" in response.json()["error"]
    raw = stripe_event_body({"id": "o"}, "x", event_id="evt_a")
    response = client.post("/webhooks/stripe", content=raw, headers=stripe_headers(raw))
    assert response.status_code == 200 and response.json()["duplicate"] is False
    assert [r.delivery_id for r in _rows(engine)] == ["evt_a"]


def test_github_deliveries_that_differ_only_in_blanks_http_keeps_are_distinct(live_url, engine):
    body = b'{"zen": "x"}'
    with httpx.Client(base_url=live_url) as client:
        for delivery in (b"abc", b"abc\xa0", b"abc\x85", b"\xa0abc"):
            headers = {**github_headers(body, "ping"), "X-GitHub-Delivery": delivery}
            response = client.post("/webhooks/github", content=body, headers=headers)
            assert response.status_code == 200 and response.json()["duplicate"] is False
    assert len(_rows(engine)) == 4


def test_the_github_event_header_is_read_as_utf8(live_url, engine):
    # Through a real server: the test client re-encodes header bytes that are not UTF-8.
    body = b'{"zen": "x"}'
    with httpx.Client(base_url=live_url) as client:
        headers = {**github_headers(body, "ping"), "X-GitHub-Event": "pïng".encode()}
        assert client.post("/webhooks/github", content=body, headers=headers).status_code == 200
        [row] = _rows(engine)
        assert row.event_type == "pïng"
        headers = {**github_headers(body, "ping"), "X-GitHub-Event": b"p\xefng"}
        response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == "X-GitHub-Event is not UTF-8"
