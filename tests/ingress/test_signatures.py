"""Every signature vector of the fixtures verifies as it says, alone and through the routes."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from ingress.app import create_app
from ingress.errors import (
    Rejection,
    SignatureInvalid,
    SignatureMalformed,
    SignatureMissing,
    TimestampOutsideTolerance,
)
from ingress.signatures import (
    github_signature,
    stripe_signature,
    verify_github,
    verify_stripe,
)
from outbox.models import WebhookEvent
from tests.conftest import CORPUS

VECTORS = json.loads((CORPUS / "signatures.json").read_text())
GITHUB = [v for v in VECTORS if v["provider"] == "github"]
STRIPE = [v for v in VECTORS if v["provider"] == "stripe"]


def _t(header: str) -> int:
    for part in header.split(","):
        key, _, value = part.partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return 0


@pytest.mark.parametrize("vector", GITHUB, ids=lambda v: v["note"][:40])
def test_github_vector_verifies_as_documented(vector):
    body = vector["payload"].encode()
    if vector["valid"]:
        assert verify_github(body, vector["header_value"], [vector["secret"]]) == 0
        assert github_signature(vector["secret"], body) == vector["header_value"]
    else:
        with pytest.raises(Rejection):
            verify_github(body, vector["header_value"], [vector["secret"]])


@pytest.mark.parametrize("vector", STRIPE, ids=lambda v: v["note"][:40])
def test_stripe_vector_verifies_as_documented(vector):
    body = vector["payload"].encode()
    at = _t(vector["header_value"])
    if vector["valid"]:
        index = verify_stripe(
            body, vector["header_value"], [vector["secret"]], tolerance=300, now=at
        )
        assert index == 0
        expected_v1 = stripe_signature(vector["secret"], body, at).split("v1=")[1]
        assert f"v1={expected_v1}" in vector["header_value"]
    else:
        with pytest.raises(Rejection):
            verify_stripe(body, vector["header_value"], [vector["secret"]], tolerance=300, now=at)


@pytest.mark.parametrize("vector", GITHUB, ids=lambda v: v["note"][:40])
def test_github_vector_through_the_route(vector, settings, engine):
    settings = settings.model_copy(update={"github_webhook_secret": vector["secret"]})
    headers = {
        vector["header_name"]: vector["header_value"],
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": "vector-delivery",
        "Content-Type": "application/json",
    }
    with TestClient(create_app(settings, engine=engine)) as client:
        response = client.post(
            "/webhooks/github", content=vector["payload"].encode(), headers=headers
        )
    with engine.connect() as conn:
        stored = conn.scalar(select(func.count()).select_from(WebhookEvent))
    if vector["valid"]:
        assert response.status_code == 200 and stored == 1
    else:
        assert response.status_code in (400, 401) and stored == 0


@pytest.mark.parametrize("vector", STRIPE, ids=lambda v: v["note"][:40])
def test_stripe_vector_through_the_route(vector, settings, engine):
    settings = settings.model_copy(update={"stripe_webhook_secret": vector["secret"]})
    at = _t(vector["header_value"])
    app = create_app(settings, engine=engine, clock=lambda: at + 10)
    headers = {vector["header_name"]: vector["header_value"], "Content-Type": "application/json"}
    with TestClient(app) as client:
        response = client.post(
            "/webhooks/stripe", content=vector["payload"].encode(), headers=headers
        )
    with engine.connect() as conn:
        rows = conn.execute(select(WebhookEvent.delivery_id, WebhookEvent.event_type)).all()
    if vector["valid"]:
        assert response.status_code == 200
        payload = json.loads(vector["payload"])
        assert rows == [(payload["id"], payload["type"])]
    else:
        assert response.status_code in (400, 401) and rows == []


def test_sha1_alone_is_refused():
    with pytest.raises(SignatureMissing):
        verify_github(b"{}", None, ["s"])
    sha1 = "sha1=" + "0" * 40
    with pytest.raises(SignatureMalformed):
        verify_github(b"{}", sha1, ["s"])


def test_any_of_several_secrets_verifies_and_is_named():
    body = b'{"a":1}'
    assert verify_github(body, github_signature("new", body), ["old", "new"]) == 1
    header = stripe_signature("whsec_new", body, 1000)
    assert verify_stripe(body, header, ["whsec_old", "whsec_new"], tolerance=300, now=1000) == 1
    with pytest.raises(SignatureInvalid):
        verify_stripe(body, header, ["whsec_other"], tolerance=300, now=1000)


def test_stripe_header_may_carry_several_v1_signatures():
    body = b'{"id":"evt_1"}'
    good = stripe_signature("whsec_b", body, 1000).split("v1=")[1]
    header = f"t=1000,v1={'0' * 64},v1={good},v0=abc"
    assert verify_stripe(body, header, ["whsec_b"], tolerance=300, now=1100) == 0


MALFORMED_STRIPE_HEADERS = {
    "non-ASCII v1": "t={now},v1=" + "é" * 64,
    "v1 not hex": "t={now},v1=" + "z" * 64,
    "superscript timestamp": "t=²,v1=" + "a" * 64,
    "Arabic-Indic timestamp": "t=١٢٣,v1=" + "a" * 64,
    "5,000-digit timestamp": "t=" + "9" * 5000 + ",v1=" + "a" * 64,
    "timestamp past any float": "t=" + "9" * 400 + ",v1=" + "a" * 64,
    "no v1": "t={now}",
    "empty": "",
}


@pytest.mark.parametrize(
    "header", MALFORMED_STRIPE_HEADERS.values(), ids=list(MALFORMED_STRIPE_HEADERS)
)
def test_a_malformed_stripe_signature_is_400_with_a_reason(header, settings, engine):
    header = header.replace("{now}", str(int(time.time())))
    with TestClient(create_app(settings, engine=engine)) as client:
        response = client.post(
            "/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": header.encode("utf-8")}
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("Stripe-Signature")


@pytest.mark.parametrize(
    ("age", "said"),
    [(-300.4, "301 s in the future"), (300.4, "301 s old"), (-86400, "86400 s in the future")],
)
def test_a_timestamp_past_the_tolerance_says_how_far_and_which_way(age, said):
    timestamp = 1_700_000_000
    header = stripe_signature("s", b"{}", timestamp)
    with pytest.raises(TimestampOutsideTolerance) as refused:
        verify_stripe(b"{}", header, ["s"], tolerance=300, now=timestamp + age)
    assert said in refused.value.reason and "-" not in refused.value.reason
