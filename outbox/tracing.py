"""Traces with OpenTelemetry: one trace per webhook, from the ingress request to its effects.

Optional (the `tracing` extra: `pip install 'webhook-outbox[tracing]'`) and off unless
configured by the standard variables: OTEL_TRACES_EXPORTER (`otlp`, over HTTP, or
`console`) or an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT /
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED=true turns it off again. The SDK
reads the rest itself (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER,
OTEL_EXPORTER_OTLP_HEADERS, ...).

A trace: the ingress's request span (ingress/tracing.py); its context kept on the stored
row (`webhook_events.trace_parent`, W3C traceparent); each attempt at the row in a worker,
a span whose parent is that context (processors/traces.py), with the handler's `prepare`
and `apply` under it, and under those the GitHub and Stripe API calls (httpx
instrumentation). A worker's pass is a trace of its own, linked from each event's span.

Off, nothing here is imported by the ingress's path: `active()` is a module flag.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from outbox.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

log = logging.getLogger("outbox.tracing")

TRACER_NAME = "webhook-outbox"
#: The W3C trace context field kept on a row (`traceparent`, 55 characters).
TRACEPARENT = "traceparent"

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def wanted(settings: Settings) -> bool:
    """Whether the OTEL_* settings ask for traces."""
    if settings.otel_sdk_disabled:
        return False
    exporter = (settings.otel_traces_exporter or "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(settings.otel_exporter_otlp_endpoint or settings.otel_exporter_otlp_traces_endpoint)


def configure(settings: Settings, process: str, *, exporter: SpanExporter | None = None) -> bool:
    """Start tracing in this process when the settings ask for it (or an exporter is given,
    as tests do); returns whether it is on. `process` names the service by default
    (`outbox-serve`, `outbox-worker`), unless OTEL_SERVICE_NAME says otherwise."""
    global _tracer, _provider
    if exporter is None and not wanted(settings):
        return False
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        log.warning(
            "OTEL_* asks for traces but the tracing extra is not installed: no traces",
            extra={"error": str(exc)},
        )
        return False
    attributes = {} if settings.otel_service_name else {SERVICE_NAME: f"outbox-{process}"}
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is not None:  # tests read spans as they end
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    instrumentor = HTTPXClientInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=provider)
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = provider, provider.get_tracer(TRACER_NAME)
    return True


def _exporter(settings: Settings) -> SpanExporter:
    kind = (settings.otel_traces_exporter or "otlp").strip().lower()
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind}: only otlp (over HTTP) and console")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def shutdown() -> None:
    """Stop tracing: export what is left, then no more spans."""
    global _tracer, _provider
    if _provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    _provider.shutdown()
    _provider = _tracer = None


def active() -> bool:
    return _tracer is not None


def tracer() -> Tracer:
    assert _tracer is not None, "tracing is off"
    return _tracer


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, for a row to carry; None outside a span."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get(TRACEPARENT)


def context_of(traceparent: str | None) -> Any:
    """The context a row's traceparent names (an empty one for None or a malformed value)."""
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not traceparent:
        return Context()
    return TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent}, context=Context())
