"""Stripe's billing meter events endpoint, in memory, through respx.

Like Stripe, it refuses a second event with an identifier it already has (400, "An event
already exists with identifier …", `Stripe-Should-Retry: false`), and it can be told to
fail the next calls, before or after recording their event (an answer lost on the way).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import httpx
import respx

STRIPE_BASE = "https://stripe.test"


class FakeStripeMeter:
    def __init__(self, router: respx.MockRouter, base_url: str = STRIPE_BASE) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self._failures: list[tuple[int, bool]] = []
        router.post(f"{base_url}/v1/billing/meter_events").mock(side_effect=self._serve)

    def fail_next(self, *statuses: int, recorded: bool = False) -> None:
        """Answer the next calls with these statuses; `recorded`: after keeping their event."""
        self._failures.extend((status, recorded) for status in statuses)

    def recover(self) -> None:
        """Answer normally again (the failures still queued are dropped)."""
        self._failures.clear()

    def _serve(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        form["idempotency_key"] = request.headers.get("idempotency-key")
        self.requests.append(form)
        failure = self._failures.pop(0) if self._failures else None
        if failure is not None and not failure[1]:
            return self._failed(failure[0])
        identifier = form["identifier"]
        if identifier in self.events:
            return httpx.Response(
                400,
                headers={"Stripe-Should-Retry": "false"},
                json={
                    "error": {
                        "type": "invalid_request_error",
                        "message": (
                            f"An event already exists with identifier {identifier}. "
                            "Please use a different identifier."
                        ),
                    }
                },
            )
        event = {
            "object": "billing.meter_event",
            "event_name": form["event_name"],
            "identifier": identifier,
            "livemode": False,
            "payload": {
                "stripe_customer_id": form["payload[stripe_customer_id]"],
                "value": form["payload[value]"],
            },
            "timestamp": int(form["timestamp"]),
            "created": int(form["timestamp"]),
        }
        self.events[identifier] = event
        if failure is not None:
            return self._failed(failure[0])
        return httpx.Response(200, json=event)

    @staticmethod
    def _failed(status: int) -> httpx.Response:
        return httpx.Response(status, json={"error": {"type": "api_error", "message": "try again"}})
