"""Traces: one trace per webhook, from the ingress request through the stored row to the
worker's attempt, its handler and the API calls it makes; nothing while tracing is off.
Read with the SDK's in-memory exporter."""

from __future__ import annotations

import httpx
import pytest
import respx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select
from starlette.testclient import TestClient

from ingress.app import create_app
from outbox import tracing
from outbox.handling import Handler, HandlerTable, RetryLater
from outbox.models import WebhookEvent
from outbox.settings import Settings
from processors import runtime
from processors.event_actor import process_events
from tests.factories import stripe_event_body, stripe_headers

PROVIDER_URL = "https://api.stripe.test/v1/things/th_1"


def traced_handlers(settings: Settings) -> HandlerTable:
    """`test.traced` reads from a provider in `prepare`; `test.flaky` fails its attempt."""

    def read_provider(context):
        return httpx.get(PROVIDER_URL).json()

    def flaky(context):
        raise RetryLater("the provider is busy")

    return {
        ("stripe", "test.traced"): Handler(
            "traced", prepare=read_provider, apply=lambda session, context, prepared: None
        ),
        ("stripe", "test.flaky"): Handler("flaky", prepare=flaky, apply=lambda *a: None),
    }


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    assert tracing.configure(Settings(), "test", exporter=exporter)
    yield exporter
    tracing.shutdown()


@pytest.fixture
def traced_settings(settings):
    return settings.model_copy(update={"handler_table": "tests.test_tracing:traced_handlers"})


def post_stripe(client: TestClient, event_type: str) -> int:
    body = stripe_event_body({"id": "th_1", "object": "thing"}, event_type)
    response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


def named(exporter: InMemorySpanExporter, name: str) -> list:
    return [span for span in exporter.get_finished_spans() if span.name == name]


@respx.mock
def test_one_trace_runs_from_the_request_through_the_row_to_the_handler_and_its_api_call(
    spans, traced_settings, engine
):
    respx.get(PROVIDER_URL).mock(return_value=httpx.Response(200, json={"id": "th_1"}))
    with TestClient(create_app(traced_settings, engine=engine)) as client:
        event_id = post_stripe(client, "test.traced")
    [request] = named(spans, "POST /webhooks/stripe")
    assert request.attributes["http.response.status_code"] == 200
    trace_id = request.context.trace_id
    with engine.connect() as conn:
        kept = conn.scalar(select(WebhookEvent.trace_parent).where(WebhookEvent.id == event_id))
    assert kept.startswith(f"00-{trace_id:032x}-{request.context.span_id:016x}-")

    runtime.configure(traced_settings, engine=engine)
    process_events([event_id])

    [attempt] = named(spans, "outbox.event")
    [prepare] = named(spans, "outbox.prepare")
    [apply] = named(spans, "outbox.apply")
    [call] = [s for s in spans.get_finished_spans() if s.attributes.get("http.url") == PROVIDER_URL]
    [pass_] = named(spans, "outbox.pass")
    assert attempt.context.trace_id == prepare.context.trace_id == call.context.trace_id == trace_id
    assert attempt.parent.span_id == request.context.span_id
    assert prepare.parent.span_id == attempt.context.span_id
    assert apply.parent.span_id == attempt.context.span_id
    assert call.parent.span_id == prepare.context.span_id
    assert attempt.attributes["outbox.outcome"] == "done"
    assert attempt.attributes["outbox.event_id"] == event_id
    # the pass is a trace of its own (it may hold many webhooks), linked from each attempt
    assert pass_.context.trace_id != trace_id
    assert [link.context.span_id for link in attempt.links] == [pass_.context.span_id]


def test_a_failed_attempt_is_an_error_span_in_the_webhooks_trace(spans, traced_settings, engine):
    with TestClient(create_app(traced_settings, engine=engine)) as client:
        event_id = post_stripe(client, "test.flaky")
    runtime.configure(traced_settings, engine=engine)
    process_events([event_id])
    [request] = named(spans, "POST /webhooks/stripe")
    [attempt] = named(spans, "outbox.event")
    [prepare] = named(spans, "outbox.prepare")
    assert attempt.context.trace_id == request.context.trace_id
    assert attempt.attributes["outbox.outcome"] == "retry"
    assert not attempt.status.is_ok and not prepare.status.is_ok
    assert [e.name for e in prepare.events] == ["exception"]


def test_with_tracing_off_no_span_is_made_and_rows_keep_no_context(traced_settings, engine):
    assert not tracing.active()
    app = create_app(traced_settings, engine=engine)
    assert not app.user_middleware  # the request path is the one without tracing
    with TestClient(app) as client:
        event_id = post_stripe(client, "test.flaky")
    with engine.connect() as conn:
        assert conn.scalar(select(WebhookEvent.trace_parent)) is None
    runtime.configure(traced_settings, engine=engine)
    process_events([event_id])  # no span to open or close: nothing breaks


@pytest.mark.parametrize(
    ("variables", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_traces_are_off_unless_the_otel_variables_ask(monkeypatch, variables, on):
    for name in [*variables, "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert tracing.wanted(Settings()) is on


def test_an_exporter_the_sdk_does_not_offer_here_is_refused():
    with pytest.raises(ValueError, match="only otlp"):
        tracing.configure(Settings(otel_traces_exporter="zipkin"), "test")
    assert not tracing.active()
