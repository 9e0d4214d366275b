"""Hostile input against both routes: never a 500, never a row without a valid signature."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter

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


# --- ids and signatures built to break the reading -------------------------------------------

#: Budget of each hostile-id fuzz below; OUTBOX_FUZZ_EXAMPLES raises it (100000 for a long run).
HOSTILE_EXAMPLES = int(os.environ.get("OUTBOX_FUZZ_EXAMPLES", "300"))

unicode_digits = st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=25)
huge_numbers = st.one_of(
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.integers(max_value=-(2**63) + 2, min_value=-(2**70)),
    st.integers(min_value=4300, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=19, max_value=40).map(lambda n: "9" * n),
)
controls = st.text(st.characters(categories=["Cc", "Cf"]), min_size=1, max_size=10)
surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
hostile_scalars = st.one_of(
    unicode_digits,
    huge_numbers,
    controls,
    surrogates,
    st.integers(),
    st.text(max_size=30),
    st.floats(allow_nan=False),
    (unicode_digits | controls | surrogates).map(lambda t: "1" + t + "2"),
)
hostile_ids = st.one_of(
    st.uuids().map(str),
    hostile_scalars.map(str),
    st.text(min_size=250, max_size=300),
    (controls | surrogates | st.just("\x00")).map(lambda t: f"evt_{t}"),
)


def _with_suffix(text: str) -> str:
    """A distinct id per example (so rows count answers), keeping the hostile part."""
    return f"{text}{uuid.uuid4().hex[:8]}"


@st.composite
def hostile_github_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, bytes], bool]:
    payload = {
        "action": draw(st.one_of(st.none(), st.text(max_size=10), controls)),
        "installation": {"id": draw(hostile_scalars), "account": {"id": draw(hostile_scalars)}},
        "repository": {"owner": {"id": draw(hostile_scalars)}},
        "pull_request": {"id": draw(hostile_scalars)},
    }
    body = json.dumps(payload).encode()
    signed = draw(st.booleans())
    event = draw(
        st.one_of(
            st.sampled_from(["installation", "pull_request", "push"]),
            st.text(max_size=20).map(lambda t: t.encode("utf-8")),
            st.binary(min_size=1, max_size=20),
        )
    )
    headers = {
        "x-hub-signature-256": (
            github_signature(GITHUB_SECRET, body) if signed else draw(header_text)
        ).encode("latin-1"),
        "x-github-event": event if isinstance(event, bytes) else event.encode(),
        "x-github-delivery": _with_suffix(draw(header_text)).encode("latin-1"),
        "content-type": b"application/json",
    }
    return body, headers, signed


@st.composite
def hostile_stripe_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, bytes], bool]:
    event_id = draw(hostile_ids)
    payload = {
        "id": _with_suffix(event_id) if len(event_id) < 250 else event_id,
        "type": draw(st.sampled_from(["checkout.session.completed", "invoice.paid", "x"])),
        "created": draw(hostile_scalars),
        "livemode": False,
        "data": {
            "object": {
                "id": draw(hostile_scalars),
                "client_reference_id": draw(hostile_scalars),
                "metadata": {"github_account_id": draw(hostile_scalars)},
                "subscription": draw(hostile_scalars),
            }
        },
    }
    body = json.dumps(payload).encode()
    signed = draw(st.booleans())
    if signed:
        header = stripe_signature(STRIPE_SECRET, body, int(time.time())).encode()
    else:
        header = draw(
            st.one_of(
                header_text.map(lambda t: t.encode("latin-1")),
                st.sampled_from(["²", "١٢", "9" * 5000, "99999999999999999999"]).map(
                    lambda t: f"t={t},v1={'a' * 64}".encode()
                ),
                st.text(st.characters(min_codepoint=128, max_codepoint=255), min_size=1).map(
                    lambda t: f"t={int(time.time())},v1={t}".encode("latin-1")
                ),
            )
        )
    return body, {"stripe-signature": header, "content-type": b"application/json"}, signed


def _fuzz_route(settings_, engine, path: str, requests: st.SearchStrategy) -> None:
    """Every example: no 5xx, and a row stored exactly when a signed request got 200 as new."""
    answers: Counter[str] = Counter()
    with TestClient(create_app(settings_, engine=engine)) as client:

        @settings(max_examples=HOSTILE_EXAMPLES, deadline=None, database=None)
        @given(request=requests)
        def one(request: tuple[bytes, dict[str, bytes], bool]) -> None:
            body, headers, signed = request
            before = _rows(engine)
            response = client.post(path, content=body, headers=headers)
            assert response.status_code < 500, response.text
            assert response.status_code == 200 or "error" in response.json()
            new = response.status_code == 200 and not response.json()["duplicate"]
            assert _rows(engine) == before + new
            assert signed or response.status_code != 200
            answers[f"{'signed' if signed else 'unsigned'} {response.status_code}"] += 1

        one()
    print(f"{path}: {sum(answers.values())} requests, {dict(sorted(answers.items()))}")


def test_github_route_reads_hostile_ids_without_a_5xx_and_stores_every_signed_body(
    settings_and_engine,
):
    _fuzz_route(*settings_and_engine, "/webhooks/github", hostile_github_requests())


def test_stripe_route_reads_hostile_ids_and_signatures_without_a_5xx(settings_and_engine):
    _fuzz_route(*settings_and_engine, "/webhooks/stripe", hostile_stripe_requests())
