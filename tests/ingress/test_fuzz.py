"""Hostile input against both routes: never a 500, never a row without a valid signature."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette.testclient import TestClient

from ingress.app import create_app
from ingress.signatures import github_signature, stripe_signature
from outbox.models import WebhookEvent
from tests.conftest import GITHUB_SECRET, STRIPE_SECRET

# Header values must be latin-1 for the HTTP client; everything else is fair game.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=300)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "id": st.one_of(st.text(max_size=300), st.integers()),
            "type": json_values,
            "created": json_values,
            "livemode": json_values,
            "account": json_values,
            "action": json_values,
            "installation": json_values,
            "data": json_values,
        }
    ).map(lambda d: json.dumps(d).encode()),
)


@st.composite
def github_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], bool]:
    body = draw(bodies)
    signed = draw(st.booleans())
    headers = {
        "X-Hub-Signature-256": github_signature(GITHUB_SECRET, body)
        if signed
        else draw(header_text),
        "X-GitHub-Event": draw(header_text),
        "X-GitHub-Delivery": draw(header_text),
        "Content-Type": draw(
            st.sampled_from(
                ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
            )
        ),
    }
    dropped = draw(st.sets(st.sampled_from(sorted(headers))))
    return body, {k: v for k, v in headers.items() if k not in dropped}, signed


@st.composite
def stripe_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], bool]:
    body = draw(bodies)
    signed = draw(st.booleans())
    if signed:
        header = stripe_signature(STRIPE_SECRET, body, int(time.time()))
        header = draw(st.sampled_from([header, header + ",v0=zz", "v1=ab," + header]))
    else:
        header = draw(header_text)
    return body, {"Stripe-Signature": header, "Content-Type": "application/json"}, signed


def _raw(headers: dict[str, str]) -> dict[str, bytes]:
    """Header values as bytes: the client would refuse non-ASCII text, a server must not."""
    return {k: v.encode("latin-1") for k, v in headers.items()}


def _rows(engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(WebhookEvent)) or 0)


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(request=github_requests())
def test_github_route_never_errors_and_stores_only_signed_bodies(settings_and_engine, request):
    settings_, engine = settings_and_engine
    body, headers, signed = request
    before = _rows(engine)
    with TestClient(create_app(settings_, engine=engine)) as client:
        response = client.post("/webhooks/github", content=body, headers=_raw(headers))
        assert client.get("/healthz").status_code == 200
    assert response.status_code in (200, 400, 401), response.text
    assert "error" in response.json() or response.status_code == 200
    if not signed:
        assert response.status_code != 200 and _rows(engine) == before
    if response.status_code != 200:
        assert _rows(engine) == before


@FUZZ
@given(request=stripe_requests())
def test_stripe_route_never_errors_and_stores_only_signed_bodies(settings_and_engine, request):
    settings_, engine = settings_and_engine
    body, headers, signed = request
    before = _rows(engine)
    with TestClient(create_app(settings_, engine=engine)) as client:
        response = client.post("/webhooks/stripe", content=body, headers=_raw(headers))
    assert response.status_code in (200, 400, 401), response.text
    if not signed:
        assert response.status_code != 200 and _rows(engine) == before
    if response.status_code != 200:
        assert _rows(engine) == before
