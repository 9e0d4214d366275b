"""The baseline: a bare Starlette endpoint on the same server stack that only verifies the HMAC.

Run with: uvicorn bench.bare_app:app (BENCH_GITHUB_SECRET sets the secret).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingress.errors import Rejection
from ingress.signatures import verify_github

SECRETS = (os.environ.get("BENCH_GITHUB_SECRET", "bench-secret"),)


async def verified(request: Request) -> tuple[bytes, Response | None]:
    """The request's body, and the refusal to answer with when its HMAC does not check."""
    body = await request.body()
    try:
        verify_github(body, request.headers.get("x-hub-signature-256"), SECRETS)
    except Rejection as rejection:
        return body, JSONResponse({"error": rejection.reason}, rejection.status)
    return body, None


async def verify_only(request: Request) -> Response:
    _, refusal = await verified(request)
    return refusal or JSONResponse({"id": 0, "duplicate": False})


app = Starlette(routes=[Route("/webhooks/github", verify_only, methods=["POST"])])
