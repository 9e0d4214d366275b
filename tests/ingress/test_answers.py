"""What the ingress answers to bad, repeated and concurrent input, and when the database is down."""

from __future__ import annotations

import asyncio
import logging
import sys

import httpx
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from ingress.app import create_app
from ingress.signatures import github_signature
from outbox.db import make_engine
from outbox.models import WebhookEvent
from tests.conftest import GITHUB_SECRET, STRIPE_SECRET
from tests.factories import github_headers, stripe_event_body, stripe_headers
from tests.ingress.conftest import RecordingDoorbell
from tests.services import wait_until

BODY = b'{"action":"opened","installation":{"id":1}}'
STRIPE_BODY = stripe_event_body({"id": "cus_1", "object": "customer"}, "customer.created")
#: A delivery a handler applies (installation.created): stored pending, and rung.
HANDLED_BODY = b'{"action":"created","installation":{"id":1}}'


def _count(engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(WebhookEvent)) or 0)


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


GOOD_GITHUB = github_headers(BODY, "issues", delivery="d-1")

BAD_INPUTS = [
    ("github", BODY, _without(GOOD_GITHUB, "X-Hub-Signature-256"), 401, "X-Hub-Signature-256"),
    (
        "github",
        BODY,
        {**_without(GOOD_GITHUB, "X-Hub-Signature-256"), "X-Hub-Signature": "sha1=" + "a" * 40},
        401,
        "sha1",
    ),
    ("github", BODY, {**GOOD_GITHUB, "X-Hub-Signature-256": "sha256=zz"}, 400, "64 hex"),
    (
        "github",
        BODY,
        {**GOOD_GITHUB, "X-Hub-Signature-256": github_signature("wrong", BODY)},
        401,
        "does not match",
    ),
    ("github", BODY + b" ", GOOD_GITHUB, 401, "does not match"),
    ("github", BODY, _without(GOOD_GITHUB, "X-GitHub-Delivery"), 400, "X-GitHub-Delivery"),
    ("github", BODY, _without(GOOD_GITHUB, "X-GitHub-Event"), 400, "X-GitHub-Event"),
    ("github", BODY, {**GOOD_GITHUB, "X-GitHub-Delivery": "x" * 300}, 400, "too long"),
    ("stripe", STRIPE_BODY, {"Content-Type": "application/json"}, 401, "Stripe-Signature"),
    ("stripe", STRIPE_BODY, {"Stripe-Signature": "garbage"}, 400, "Stripe-Signature"),
    ("stripe", STRIPE_BODY, {"Stripe-Signature": "t=abc,v1=00"}, 400, "not a number"),
    ("stripe", STRIPE_BODY, {"Stripe-Signature": "t=1,v0=00"}, 400, "'v1'"),
    ("stripe", STRIPE_BODY, stripe_headers(STRIPE_BODY, secret="whsec_wrong"), 401, "no v1"),
    ("stripe", STRIPE_BODY + b"\n", stripe_headers(STRIPE_BODY), 401, "no v1"),
]


@pytest.mark.parametrize(
    ("source", "body", "headers", "status", "reason"),
    BAD_INPUTS,
    ids=[f"{b[0]}-{b[3]}-{b[4]}" for b in BAD_INPUTS],
)
def test_bad_input_gets_its_status_and_a_reason_and_stores_nothing(
    client, engine, source, body, headers, status, reason
):
    response = client.post(f"/webhooks/{source}", content=body, headers=headers)
    assert response.status_code == status
    assert reason in response.json()["error"]
    assert _count(engine) == 0


def test_body_over_the_limit_is_refused_by_its_declared_length(settings, engine):
    settings = settings.model_copy(update={"max_body_bytes": 4096})
    body = b'{"pad":"' + b"x" * 5000 + b'"}'
    with TestClient(create_app(settings, engine=engine)) as client:
        response = client.post(
            "/webhooks/github", content=body, headers=github_headers(body, "ping")
        )
    assert response.status_code == 413
    assert _count(engine) == 0


def test_body_over_the_limit_is_refused_while_streaming_without_a_length(settings, engine):
    settings = settings.model_copy(update={"max_body_bytes": 4096})
    chunks = [b"x" * 1024] * 64  # 64 KiB, sent chunked with no Content-Length
    body = b"".join(chunks)
    headers = github_headers(body, "ping")
    with TestClient(create_app(settings, engine=engine)) as client:
        response = client.post("/webhooks/github", content=iter(chunks), headers=headers)
    assert response.status_code == 413
    assert _count(engine) == 0


def test_a_body_sent_in_chunks_is_stored_whole(client, engine):
    body = b'{"action":"opened","installation":{"id":1},"pad":"' + b"y" * 5000 + b'"}'
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    headers = github_headers(body, "issues", delivery="chunked-1")
    response = client.post("/webhooks/github", content=iter(chunks), headers=headers)
    assert response.status_code == 200, response.text
    with engine.connect() as conn:
        assert conn.scalar(select(WebhookEvent.raw_body)) == body


def test_a_sender_gone_before_its_body_ended_stores_nothing_gets_no_answer_and_one_log_line(
    settings, engine, caplog
):
    body = BODY + b" " * 100
    headers = github_headers(body, "issues", delivery="gone-1")
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/github",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "query_string": b"",
    }
    messages = [
        {"type": "http.request", "body": body[:20], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    app = create_app(settings, engine=engine)
    with TestClient(app), caplog.at_level(logging.DEBUG):  # TestClient: the writer runs
        asyncio.run(app.router(scope, receive, send))
    assert sent == [] and _count(engine) == 0
    [line] = [r for r in caplog.records if r.name.startswith("outbox.ingress")]
    assert line.outcome == "disconnected" and line.exc_info is None


def test_a_webhook_route_answers_get_with_405(client, engine):
    response = client.get("/webhooks/github")
    assert response.status_code == 405
    assert _count(engine) == 0


def test_unconfigured_secret_refuses_instead_of_trusting(settings, engine):
    settings = settings.model_copy(update={"github_webhook_secret": None})
    with TestClient(create_app(settings, engine=engine)) as client:
        response = client.post("/webhooks/github", content=BODY, headers=GOOD_GITHUB)
    assert response.status_code == 503
    assert "GITHUB_WEBHOOK_SECRET" in response.json()["error"]
    assert _count(engine) == 0


def test_fifty_concurrent_copies_of_one_delivery_store_one_row(live_url, engine, doorbell):
    headers = github_headers(HANDLED_BODY, "installation", delivery="the-same-delivery")

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_url, timeout=30) as http:
            return await asyncio.gather(
                *(
                    http.post("/webhooks/github", content=HANDLED_BODY, headers=headers)
                    for _ in range(50)
                )
            )

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * 50
    answers = [r.json() for r in responses]
    assert len({a["id"] for a in answers}) == 1
    assert sum(not a["duplicate"] for a in answers) == 1
    assert _count(engine) == 1
    assert doorbell.rung_ids() == {answers[0]["id"]}


def test_many_concurrent_distinct_deliveries_are_each_stored_and_answered(live_url, engine):
    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_url, timeout=30) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        "/webhooks/github",
                        content=BODY,
                        headers=github_headers(BODY, "issues", delivery=f"d-{n}"),
                    )
                    for n in range(200)
                )
            )

    responses = asyncio.run(send_all())
    assert all(r.status_code == 200 and r.json()["duplicate"] is False for r in responses)
    assert len({r.json()["id"] for r in responses}) == 200
    assert _count(engine) == 200


@pytest.mark.parametrize(
    "unreachable",
    [
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        "sqlite:////nonexistent-dir/for/outbox.db",
    ],
)
def test_database_down_answers_503_and_not_ready(settings, unreachable):
    dead = make_engine(unreachable)
    with TestClient(create_app(settings, engine=dead)) as client:
        for source, body, headers in (
            ("github", BODY, GOOD_GITHUB),
            ("stripe", STRIPE_BODY, stripe_headers(STRIPE_BODY)),
        ):
            response = client.post(f"/webhooks/{source}", content=body, headers=headers)
            assert response.status_code == 503
            assert "database unavailable" in response.json()["error"]
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200


def test_a_failing_doorbell_never_fails_the_request(settings, engine):
    with TestClient(
        create_app(settings, engine=engine, doorbell=RecordingDoorbell(fail=True))
    ) as c:
        response = c.post("/webhooks/github", content=BODY, headers=GOOD_GITHUB)
    assert response.status_code == 200
    assert _count(engine) == 1


def test_health_readiness_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.post("/webhooks/github", content=BODY, headers=GOOD_GITHUB)
    client.post("/webhooks/github", content=BODY, headers=GOOD_GITHUB)
    client.post("/webhooks/stripe", content=STRIPE_BODY, headers={"Stripe-Signature": "bad"})
    text = client.get("/metrics").text
    assert 'outbox_webhook_requests_total{outcome="stored",source="github"}' in text
    assert 'outbox_webhook_requests_total{outcome="duplicate",source="github"}' in text
    assert 'outbox_webhook_requests_total{outcome="bad_request",source="stripe"}' in text
    assert "outbox_webhook_handling_seconds_bucket" in text


def test_logs_name_the_delivery_and_outcome_but_never_a_secret_or_body(client, caplog):
    caplog.set_level(logging.INFO, logger="outbox")
    secret_body = b'{"action":"opened","token":"very-private-body-value"}'
    client.post(
        "/webhooks/github",
        content=secret_body,
        headers=github_headers(secret_body, "issues", delivery="log-delivery"),
    )
    client.post("/webhooks/stripe", content=STRIPE_BODY, headers=stripe_headers(STRIPE_BODY))
    committed = [r for r in caplog.records if r.getMessage() == "webhooks committed"]
    assert any("github:log-delivery" in r.stored for r in committed)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in (GITHUB_SECRET, STRIPE_SECRET, "very-private-body-value"):
        assert secret not in text


def test_a_redelivery_is_logged_as_a_duplicate_of_its_batch(client, caplog):
    caplog.set_level(logging.INFO, logger="outbox")
    body = b'{"action":"opened"}'
    headers = github_headers(body, "issues", delivery="twice-delivered")
    for _ in range(2):
        assert client.post("/webhooks/github", content=body, headers=headers).status_code == 200

    def committed_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "webhooks committed"]

    # A batch's line is written just after its requests are answered (ingress.batch_log).
    committed = wait_until(lambda: len(committed_lines()) >= 2 and committed_lines(), timeout=5)
    assert [r.stored for r in committed] == [["github:twice-delivered"], []]
    assert [r.duplicates for r in committed] == [[], ["github:twice-delivered"]]


def test_a_refused_request_is_a_warning_of_its_own(client, caplog):
    caplog.set_level(logging.INFO, logger="outbox")
    body = b'{"action":"opened"}'
    headers = {
        **github_headers(body, "issues", delivery="forged"),
        "X-Hub-Signature-256": "sha256=" + "0" * 64,
    }
    assert client.post("/webhooks/github", content=body, headers=headers).status_code == 401
    [refused] = [r for r in caplog.records if getattr(r, "delivery_id", None) == "forged"]
    assert refused.levelno == logging.WARNING and refused.outcome == "unauthorized"
    assert not [r for r in caplog.records if r.getMessage() == "webhooks committed"]


def test_signed_body_with_a_lone_surrogate_in_a_field_is_stored_not_refused_forever(client, engine):
    # JSON allows "\ud800"; no UTF-8 column can hold it. Refusing with 503 would make the
    # provider retry a body that can never be stored, and fail the rows batched with it.
    body = STRIPE_BODY.replace(b'"customer.created"', b'"customer.\\ud800created"')
    answer = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert answer.status_code == 200, answer.text
    with engine.connect() as conn:
        stored = conn.execute(select(WebhookEvent.event_type, WebhookEvent.raw_body)).one()
    assert stored.raw_body == body
    assert stored.event_type.startswith("customer.") and stored.event_type.endswith("created")


@pytest.mark.parametrize("route", ["github", "stripe"])
def test_signed_json_nested_too_deeply_to_read_is_stored_dead_not_a_500(client, engine, route):
    depth = sys.getrecursionlimit() * 2
    body = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    headers = github_headers(body, "issues") if route == "github" else stripe_headers(body)
    answer = client.post(f"/webhooks/{route}", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    with engine.connect() as conn:
        stored = conn.execute(select(WebhookEvent.status, WebhookEvent.last_error)).one()
    assert stored.status == "dead" and "nested too deeply" in stored.last_error


def test_request_headers_are_looked_up_like_starlettes_first_value_wins():
    from starlette.requests import Request

    from ingress.app import request_headers

    raw = [(b"x-github-delivery", b"first"), (b"X-GitHub-Event", b"issues")]
    raw.append((b"x-github-delivery", b"second"))
    scope = {"type": "http", "headers": raw}
    request = Request(scope)
    headers = request_headers(scope)
    assert headers["x-github-delivery"] == request.headers["x-github-delivery"] == "first"
    assert headers["x-github-event"] == "issues"


def _errors_counted(client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('outbox_webhook_requests_total{outcome="error",source="github"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_fault_of_the_ingress_is_a_json_500_counted_and_one_log_line(
    client, engine, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr("ingress.github.github_event", broken)
    before = _errors_counted(client)
    with caplog.at_level(logging.INFO):
        response = client.post("/webhooks/github", content=BODY, headers=GOOD_GITHUB)
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert _errors_counted(client) == before + 1
    [line] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.name == "outbox.ingress" and line.exc_info is None
    assert line.error == "RuntimeError" and line.where.endswith(
        "test_answers.py:" + str(broken.__code__.co_firstlineno + 1)
    )
    assert _count(engine) == 0
