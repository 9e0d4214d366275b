"""The naive baseline: a Starlette endpoint on the same server stack that checks the HMAC,
then stores the webhook with one INSERT and its own commit, on a connection taken from a
pool of psycopg async connections, and answers.

Run with: uvicorn bench.naive_app:app (BENCH_GITHUB_SECRET sets the secret,
BENCH_NAIVE_DSN the database, whose table `naive_webhooks` it creates).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.bare_app import verified

DSN = os.environ.get("BENCH_NAIVE_DSN", "host=127.0.0.1 user=postgres dbname=test")
POOL_SIZE = 16  #: connections: one per sender at 16, so a request never waits for one there

CREATE = """CREATE TABLE IF NOT EXISTS naive_webhooks (
    id bigserial PRIMARY KEY, delivery_id text UNIQUE NOT NULL, event text NOT NULL,
    body bytea NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"""
INSERT = "INSERT INTO naive_webhooks (delivery_id, event, body) VALUES (%s, %s, %s) RETURNING id"

_pool: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()


async def store(request: Request) -> Response:
    body, refusal = await verified(request)
    if refusal is not None:
        return refusal
    conn = await _pool.get()
    try:
        async with conn.transaction():
            cursor = await conn.execute(
                INSERT,
                (request.headers["x-github-delivery"], request.headers["x-github-event"], body),
            )
            row = await cursor.fetchone()
    finally:
        _pool.put_nowait(conn)
    assert row is not None
    return JSONResponse({"id": row[0], "duplicate": False})


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        await conn.execute(CREATE)
    for _ in range(POOL_SIZE):
        _pool.put_nowait(await psycopg.AsyncConnection.connect(DSN, autocommit=True))
    yield
    while not _pool.empty():
        await _pool.get_nowait().close()


app = Starlette(routes=[Route("/webhooks/github", store, methods=["POST"])], lifespan=lifespan)
