"""The provider fakes over real HTTP, for drills and tests whose worker processes must reach
GitHub and Stripe (respx only sees the process it runs in).

    with FakeProviders() as fake:
        fake.github.add_repo("octo/app")
        env = {"GITHUB_API_URL": fake.url, "STRIPE_API_BASE": fake.url, ...}
        ...  # run `outbox worker` processes with env
        assert fake.github.pull_requests_opened() == 40
        assert fake.stripe.accepted == {"usage:pr_job:1": 1, ...}

One uvicorn server on a free 127.0.0.1 port, in a thread of the test process, serves both
fakes, the same ones unit tests mount on respx: Stripe's paths start with /v1/ and go to
`fake.stripe` (tests/fakes/stripe.py); every other path goes to `fake.github`
(tests/fakes/github.py). Faults are injected on either fake (`fake.github.fail(...)`,
`fake.stripe.fail(...)`, `fake.github.rate_limit(...)`).
"""

from __future__ import annotations

import threading

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.github import FakeGitHub
from tests.fakes.stripe import FakeStripe
from tests.services import _Service, free_port, wait_for_port

START_TIMEOUT = 10.0  #: seconds the server may take to accept connections
STOP_TIMEOUT = 5.0  #: seconds the server thread may take to stop


class FakeProviders(_Service):
    """GitHub and Stripe on one local port; see the module docstring."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.github = FakeGitHub(base_url=self.url)
        self.stripe = FakeStripe(base_url=self.url)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        """One call, answered by whichever fake owns its path."""
        if request.url.path.startswith("/v1/"):
            return self.stripe.serve(request)
        return self.github.serve(request)

    async def _asgi_endpoint(self, request: Request) -> Response:
        body = await request.body()
        forwarded = httpx.Request(
            request.method, str(request.url), headers=request.headers.raw, content=body
        )
        answer = self.handle(forwarded)
        content = answer.read()
        dropped = ("content-length", "content-encoding")
        headers = {k: v for k, v in answer.headers.items() if k not in dropped}
        return Response(content, answer.status_code, headers=headers)

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self._asgi_endpoint, methods=methods)])

    def start(self) -> None:
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
            lifespan="off",
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-providers", daemon=True)
        self._thread.start()
        wait_for_port(self.port, timeout=START_TIMEOUT, alive=self._thread.is_alive)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        self._server = self._thread = None

    def close(self) -> None:
        self.stop()
