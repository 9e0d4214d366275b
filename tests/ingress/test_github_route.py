"""POST /webhooks/github: every corpus example is verified, stored once, with its metadata."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from outbox.models import Status, WebhookEvent
from outbox.payload import decode_body
from tests.conftest import CORPUS
from tests.factories import github_headers

EXAMPLES = sorted((CORPUS / "github").glob("*/*.json"))


def _stored(engine) -> list[WebhookEvent]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


def _expected_type(event: str, payload: dict) -> str:
    return f"{event}.{payload['action']}" if "action" in payload else event


def test_the_corpus_has_every_github_example():
    assert len(EXAMPLES) == 114


def test_every_github_example_is_stored_with_its_event_type(client, engine, handler_table):
    for n, path in enumerate(EXAMPLES):
        body = path.read_bytes()
        headers = github_headers(body, path.parent.name, delivery=f"delivery-{n}")
        response = client.post("/webhooks/github", content=body, headers=headers)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["duplicate"] is False
    rows = _stored(engine)
    assert len(rows) == len(EXAMPLES)
    for path, row in zip(EXAMPLES, rows, strict=True):
        payload = json.loads(path.read_bytes())
        assert row.raw_body == path.read_bytes()
        assert row.event_type == _expected_type(path.parent.name, payload), path
        assert row.installation_id == (payload.get("installation") or {}).get("id")
        assert row.hook_id == "123456"
        # Pending for a handler to apply, else stored finished (ingress/stored_only.py).
        if ("github", row.event_type) in handler_table:
            assert (row.status, row.last_error) == (Status.PENDING, None)
        else:
            assert row.status == Status.SKIPPED
            assert row.last_error == f"no handler for github {row.event_type}"
        assert row.verified_by == "github#0"
        assert decode_body(row.raw_body, row.headers["content-type"]) == payload


def test_installation_events_carry_account_and_ordering_key(client, engine):
    body = (CORPUS / "github/installation/created.payload.json").read_bytes()
    client.post("/webhooks/github", content=body, headers=github_headers(body, "installation"))
    [row] = _stored(engine)
    payload = json.loads(body)
    assert row.account_id == payload["installation"]["account"]["id"]
    assert row.object_id == f"installation:{payload['installation']['id']}"


def test_form_encoded_delivery_is_verified_over_the_raw_body_and_decoded(client, engine):
    payload = json.loads((CORPUS / "github/pull_request/opened.payload.json").read_bytes())
    body = urlencode({"payload": json.dumps(payload)}).encode()
    headers = github_headers(body, "pull_request", content_type="application/x-www-form-urlencoded")
    response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 200
    [row] = _stored(engine)
    assert row.raw_body == body
    assert row.event_type == "pull_request.opened"
    assert row.installation_id == payload["installation"]["id"]
    assert decode_body(row.raw_body, row.headers["content-type"]) == payload


def test_a_redelivery_is_a_duplicate_and_rings_again_until_done(client, engine, doorbell):
    body = (CORPUS / "github/installation/created.payload.json").read_bytes()
    headers = github_headers(body, "installation", delivery="same-delivery")
    first = client.post("/webhooks/github", content=body, headers=headers).json()
    again = client.post("/webhooks/github", content=body, headers=headers).json()
    assert first["duplicate"] is False and again == {"id": first["id"], "duplicate": True}
    assert len(_stored(engine)) == 1
    assert doorbell.rung_ids() == {first["id"]}
    assert len(doorbell.rings) >= 2  # the repeat rang the bell again


@pytest.mark.parametrize(
    "path",
    [CORPUS / "github/ping/payload.json"],
)
def test_signed_body_that_is_not_json_is_kept_as_unprocessable(client, engine, path: Path):
    body = b"this is not json {"
    response = client.post("/webhooks/github", content=body, headers=github_headers(body, "ping"))
    assert response.status_code == 200
    [row] = _stored(engine)
    assert row.raw_body == body
    assert row.status == Status.DEAD
    assert row.last_error.startswith("unprocessable: body is not valid JSON")
