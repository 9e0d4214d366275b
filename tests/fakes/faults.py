"""Injected failures for the provider fakes: the one mechanism both GitHub and Stripe use.

`fake.fail("POST", "/pulls", status=500, store=True)` answers the next matching call with
500 after doing it (GitHub stored the pull request, then its answer was lost);
`store=False` answers before doing anything. Faults match in the order they were added,
each `times` times, so `fail(..., status=500)` then `fail(..., status=429)` fail two calls
in turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Fault:
    """The answer to the next `times` calls of `method` to a path ending in `path_suffix`."""

    method: str
    path_suffix: str
    status: int
    store: bool  #: do the call first, then answer `status` (the provider kept its effect)
    body: dict[str, Any] | list[Any]
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1

    def answer(self) -> httpx.Response:
        return httpx.Response(self.status, json=self.body, headers=self.headers)


class Faults:
    """Injected failures, matched in the order they were added; safe across threads."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        """Answer normally again: the faults still waiting are dropped."""
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The fault for this call, if any (one of its `times` used up)."""
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.method == method and path.endswith(fault.path_suffix):
                    fault.times -= 1
                    return fault
            return None

    def around(
        self, request: httpx.Request, answer: Callable[[httpx.Request], httpx.Response]
    ) -> httpx.Response:
        """`answer(request)`, unless a fault answers in its place: before it, or after it
        when the fault stores."""
        fault = self.take(request.method, request.url.path)
        if fault is not None and not fault.store:
            return fault.answer()
        response = answer(request)
        return response if fault is None else fault.answer()


class InjectsFaults:
    """What a provider fake offers to make its calls fail: `fail(...)`, and `faults` to
    consult (`faults.around`) when it answers a call. `fault_body` is the provider's error
    document for a status."""

    faults: Faults

    def fail(
        self,
        method: str,
        path_suffix: str,
        *,
        status: int = 500,
        store: bool = False,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | list[Any] | None = None,
    ) -> None:
        """Answer the next `times` matching calls with `status` (after doing them if `store`)."""
        answer = self.fault_body(status) if body is None else body
        self.faults.add(Fault(method, path_suffix, status, store, answer, headers or {}, times))

    def fault_body(self, status: int) -> dict[str, Any]:
        raise NotImplementedError
