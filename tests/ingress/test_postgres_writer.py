"""The loop-driven Postgres group commit: answers only after the commit, batches shared,
one bad row never failing its neighbours."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, func, select

from ingress.errors import DatabaseUnavailable
from ingress.postgres_writer import PostgresGroupWriter
from outbox.db import make_engine
from outbox.deadlines import call_deadline
from outbox.models import WebhookEvent
from outbox.store import Recorded
from tests.conftest import _empty_postgres
from tests.factories import incoming
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    _empty_postgres(postgres_url)
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()
    _empty_postgres(postgres_url)


def _dsn(engine: Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _with_writer(engine: Engine, body, connections: int = 2):  # type: ignore[no-untyped-def]
    rung: list[list[int]] = []
    writer = PostgresGroupWriter(engine, lambda ids: rung.append(list(ids)), connections)
    writer.start()
    try:
        return await body(writer), rung
    finally:
        await writer.stop()


def test_every_answer_comes_after_its_row_is_visible_to_other_sessions(pg_engine):
    async def body(writer: PostgresGroupWriter) -> int:
        async with await psycopg.AsyncConnection.connect(_dsn(pg_engine), autocommit=True) as spy:

            async def store_and_look(n: int) -> bool:
                recorded = await writer.store(incoming(f"visible-{n}"))
                cursor = await spy.execute(
                    "SELECT count(*) FROM webhook_events WHERE id = %s", (recorded.id,)
                )
                row = await cursor.fetchone()
                return row is not None and row[0] == 1

            seen = await asyncio.gather(*(store_and_look(n) for n in range(60)))
        return sum(seen)

    seen, _ = asyncio.run(_with_writer(pg_engine, body))
    assert seen == 60


def test_answers_wait_while_their_statement_cannot_commit(pg_engine):
    """A delivery another transaction holds blocks the batch's INSERT: nobody in it is answered."""

    async def body(writer: PostgresGroupWriter) -> tuple[bool, list[Recorded]]:
        async with await psycopg.AsyncConnection.connect(_dsn(pg_engine)) as blocker:
            await blocker.execute(
                "INSERT INTO webhook_deliveries (source, delivery_id, event_id, received_at) "
                "VALUES ('stripe', 'held', 0, now())"
            )
            stores = [
                asyncio.ensure_future(writer.store(incoming(d))) for d in ("held", "beside-it")
            ]
            await asyncio.sleep(0.5)
            answered_early = any(s.done() for s in stores)
            await blocker.rollback()
            return answered_early, list(await asyncio.gather(*stores))

    (answered_early, results), _ = asyncio.run(_with_writer(pg_engine, body, connections=1))
    assert not answered_early
    assert [r.duplicate for r in results] == [False, False]


def test_concurrent_requests_share_statements_and_each_gets_its_own_answer(pg_engine):
    async def body(writer: PostgresGroupWriter) -> list[Recorded]:
        return list(
            await asyncio.gather(*(writer.store(incoming(f"shared-{n}")) for n in range(100)))
        )

    results, rung = asyncio.run(_with_writer(pg_engine, body))
    assert len({r.id for r in results}) == 100
    assert {i for ring in rung for i in ring} == {r.id for r in results}
    with pg_engine.connect() as conn:
        statements = conn.scalar(select(func.count(func.distinct(WebhookEvent.received_at))))
    assert statements is not None and statements < 100


def test_a_row_postgres_refuses_fails_alone_and_its_batch_neighbours_are_stored(pg_engine):
    # Postgres text cannot hold NUL; the fields the ingress takes from a payload are
    # cleaned of it, this one is not (it is the ingress's own), so it stands in for any
    # row the server refuses.
    bad = dataclasses.replace(incoming("refused"), verified_by="stripe#\x00")

    async def body(writer: PostgresGroupWriter) -> list[Recorded | BaseException]:
        stores = [writer.store(incoming(f"good-{n}")) for n in range(5)]
        return list(await asyncio.gather(writer.store(bad), *stores, return_exceptions=True))

    results, _ = asyncio.run(_with_writer(pg_engine, body, connections=1))
    assert isinstance(results[0], DatabaseUnavailable)
    assert all(isinstance(r, Recorded) and not r.duplicate for r in results[1:])
    with pg_engine.connect() as conn:
        stored = conn.scalars(select(WebhookEvent.delivery_id)).all()
    assert sorted(stored) == [f"good-{n}" for n in range(5)]


def test_a_repeat_is_a_duplicate_with_the_first_rows_id(pg_engine):
    async def body(writer: PostgresGroupWriter) -> tuple[Recorded, Recorded, Recorded]:
        first = await writer.store(incoming("twice"))
        same_batch = await asyncio.gather(*(writer.store(incoming("x2")) for _ in range(2)))
        again = await writer.store(incoming("twice"))
        assert {same_batch[0].id} == {same_batch[1].id}
        assert sorted(r.duplicate for r in same_batch) == [False, True]
        return first, again, same_batch[1]

    (first, again, _), rung = asyncio.run(_with_writer(pg_engine, body))
    assert again == Recorded(first.id, True, first.status)
    assert [first.id] in rung and rung.count([first.id]) == 2  # a pending repeat rings again


def test_database_down_fails_the_batch_with_database_unavailable():
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")

    async def body(writer: PostgresGroupWriter) -> list[BaseException | Recorded]:
        stores = [writer.store(incoming(f"lost-{n}")) for n in range(3)]
        return list(await asyncio.gather(*stores, return_exceptions=True))

    results, rung = asyncio.run(_with_writer(engine, body))
    assert all(isinstance(r, DatabaseUnavailable) for r in results)
    assert rung == []


def test_after_a_call_misses_its_deadline_the_connections_opened_before_it_are_not_used_again(
    pg_engine, postgres_url
):
    """A failover that froze one connection froze its siblings: the next batch must not wait
    out a second deadline on the writer's other old connection."""
    port = make_engine(postgres_url).url.port or 5432
    with FaultProxy(port) as proxy:
        proxied = make_engine(postgres_url.replace(f":{port}/", f":{proxy.port}/"))

        async def body(writer: PostgresGroupWriter) -> tuple[list[object], float]:
            # Both connection tasks open a connection: while one waits on a row another
            # transaction holds, the next requests go to the other.
            async with await psycopg.AsyncConnection.connect(_dsn(pg_engine)) as blocker:
                await blocker.execute(
                    "INSERT INTO webhook_deliveries (source, delivery_id, event_id, received_at) "
                    "VALUES ('stripe', 'held', 0, now())"
                )
                held = asyncio.ensure_future(writer.store(incoming("held")))
                await asyncio.sleep(0.2)
                await asyncio.gather(*(writer.store(incoming(f"beside-{n}")) for n in range(8)))
                await blocker.rollback()
            await asyncio.gather(held, return_exceptions=True)  # stored or timed out: either
            assert len(proxy._links) == 2  # the connections opened so far
            proxy.freeze()
            lost = await asyncio.gather(writer.store(incoming("frozen")), return_exceptions=True)
            started = time.perf_counter()
            after = await writer.store(incoming("after"))
            return [*lost, after], time.perf_counter() - started

        async def run() -> tuple[tuple[list[object], float], list[list[int]]]:
            rung: list[list[int]] = []
            writer = PostgresGroupWriter(proxied, lambda ids: rung.append(list(ids)), 2, 1.0)
            writer.start()
            try:
                return await body(writer), rung
            finally:
                proxy.pass_through()
                await asyncio.wait_for(writer.stop(), 30)

        ((answers, after_seconds), _) = asyncio.run(run())
        proxied.dispose()
    assert isinstance(answers[0], DatabaseUnavailable)
    assert isinstance(answers[1], Recorded) and not answers[1].duplicate
    assert after_seconds < call_deadline(1.0)
