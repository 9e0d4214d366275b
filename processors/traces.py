"""The processors' spans (outbox/tracing.py): a pass, and each attempt at a row.

Each attempt at a row is a span `outbox.event` in the row's own trace (its parent is the
context the ingress kept on the row), linked to the pass that claimed it; the handler's
`prepare` and `apply` are spans under it, and the API calls they make are under those
(httpx instrumentation). Every function is a no-op while tracing is off.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from outbox import tracing
from outbox.claiming import ClaimedEvent

_open: dict[int, Any] = {}  # event id -> its attempt's span, from claim to outcome
_lock = threading.Lock()
_OFF = contextlib.nullcontext()


@contextlib.contextmanager
def _pass_span(asked: int) -> Iterator[None]:
    with tracing.tracer().start_as_current_span(
        "outbox.pass", attributes={"outbox.ids_asked": asked}
    ):
        yield


def pass_span(asked: int) -> contextlib.AbstractContextManager[None]:
    """A worker's pass over the rows a message (or the sweeper) named."""
    return _pass_span(asked) if tracing.active() else _OFF


def begin_events(events: Sequence[ClaimedEvent]) -> None:
    """Open a span for each claimed row, in its own trace, linked to the current pass."""
    if not tracing.active():
        return
    from opentelemetry import trace

    tracer = tracing.tracer()
    here = trace.get_current_span().get_span_context()
    links = [trace.Link(here)] if here.is_valid else []
    opened = {
        event.id: tracer.start_span(
            "outbox.event",
            context=tracing.context_of(event.trace_parent),
            links=links,
            attributes={
                "outbox.event_id": event.id,
                "outbox.source": event.source,
                "outbox.event_type": event.event_type,
                "outbox.delivery_id": event.delivery_id,
                "outbox.attempt": event.attempts,
            },
        )
        for event in events
    }
    with _lock:
        # A pass cut short (the database gone mid-batch) left its rows' spans open: they
        # end when the row is claimed again, so none is held for ever.
        stale = [_open.pop(event_id) for event_id in opened if event_id in _open]
        _open.update(opened)
    for span in stale:
        span.set_attribute("outbox.outcome", "interrupted")
        span.end()


@contextlib.contextmanager
def _step(span: Any, name: str) -> Iterator[None]:
    from opentelemetry import trace

    with (
        trace.use_span(span, end_on_exit=False),
        tracing.tracer().start_as_current_span(f"outbox.{name}"),
    ):
        yield


def event_step(event: ClaimedEvent, name: str) -> contextlib.AbstractContextManager[None]:
    """A span `outbox.<name>` under the row's span, current while the step runs (so the
    API calls it makes are under it); an exception is recorded on it and goes on."""
    span = _open.get(event.id) if tracing.active() else None
    return _OFF if span is None else _step(span, name)


def end_event(event: ClaimedEvent, outcome: str, error: BaseException | None = None) -> None:
    """Close the row's span with how the attempt ended."""
    if not tracing.active():
        return
    with _lock:
        span = _open.pop(event.id, None)
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("outbox.outcome", outcome)
    if error is not None and outcome != "done":
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}"))
    span.end()
