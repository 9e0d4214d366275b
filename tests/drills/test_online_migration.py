"""The online migration drill: a single webhook_events table of many rows moved to partitions
while webhooks keep arriving, and not one of them refused, lost or stored twice.

1. a database at 0012 with ROWS finished rows, made in SQL;
2. the expand step (0013) while a thread stores webhooks with the 0012 code's INSERT: the
   trigger puts each in the delivery index;
3. `outbox serve` (this code) takes a steady stream of signed GitHub webhooks while
   `outbox migrate` makes the swap.

OUTBOX_DRILL_MOVE_ROWS sets ROWS (default 1,000,000: about 32 s on this project's 2-core
machine at a load average of 7; docs/partitions.md has the figures). A smaller number
makes a quick run while changing the migrations.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest

from outbox.migrate import upgrade
from outbox.schema import SERVING_BEFORE_HEAD
from tests.conftest import GITHUB_SECRET
from tests.drills import DRILLS
from tests.factories import github_headers
from tests.outbox.single_table import conninfo_of, fill_single_table, insert_the_old_way
from tests.services import OutboxProcess, free_port, outbox_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(300),
    pytest.mark.xdist_group(DRILLS),
]

ROWS = int(os.environ.get("OUTBOX_DRILL_MOVE_ROWS", "1000000"))
SEND_EVERY = 0.01  #: seconds between two webhooks of the steady stream (~100 a second at most)
log = logging.getLogger(__name__)


@dataclass
class Stream:
    """Signed GitHub webhooks posted one after another until stopped; every answer kept."""

    base_url: str
    answers: list[tuple[str, int, dict]] = field(default_factory=list)
    slowest: float = 0.0  #: seconds of the slowest answer
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self.stop.is_set():
                self.post(client, str(uuid.uuid4()))
                time.sleep(SEND_EVERY)

    def post(self, client: httpx.Client, delivery: str) -> dict:
        body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
        headers = github_headers(body, "ping", delivery)
        sent = time.monotonic()
        response = client.post("/webhooks/github", content=body, headers=headers)
        self.slowest = max(self.slowest, time.monotonic() - sent)
        answer = response.json() if response.status_code < 500 else {}
        self.answers.append((delivery, response.status_code, answer))
        return answer


@dataclass
class OldCode:
    """Stores webhooks with the 0012 code's INSERT in a thread until stopped."""

    conninfo: str
    ids: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.stop.is_set():
                new = insert_the_old_way(conn)
                assert new is not None
                self.ids.append(new)
                time.sleep(0.005)


def beside(work: OldCode | Stream, step) -> float:  # type: ignore[no-untyped-def]
    """Run `step` while `work` runs in a thread; seconds `step` took."""
    thread = threading.Thread(target=work.run)
    thread.start()
    started = time.monotonic()
    try:
        step()
    finally:
        took = time.monotonic() - started
        time.sleep(0.3)  # a few more after the step
        work.stop.set()
        thread.join(30)
    return took


def test_a_million_rows_move_to_partitions_while_every_webhook_is_stored_once(
    database_at_0012, redis_url, tmp_path
):
    url, conninfo = database_at_0012, conninfo_of(database_at_0012)
    timings: dict[str, float] = {}
    started = time.monotonic()
    fill_single_table(conninfo, ROWS)
    timings["fill"] = time.monotonic() - started

    old_code = OldCode(conninfo)
    timings["0013"] = beside(old_code, lambda: upgrade(url, SERVING_BEFORE_HEAD))
    with psycopg.connect(conninfo) as conn:
        indexed = conn.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE event_id = ANY(%s)", (old_code.ids,)
        ).fetchone()
        before = conn.execute("SELECT count(*), max(id) FROM webhook_events").fetchone()
    assert old_code.ids and indexed == (len(old_code.ids),)
    assert before is not None and before[0] == ROWS + len(old_code.ids)

    port = free_port()
    env = outbox_env(url, redis_url=redis_url, github_webhook_secret=GITHUB_SECRET)
    with OutboxProcess(["serve", "--port", str(port)], env, port=port, log_dir=tmp_path):
        stream = Stream(f"http://127.0.0.1:{port}")
        migrate = OutboxProcess(["migrate"], env, log_dir=tmp_path)

        def swap() -> None:
            migrate.start()
            assert migrate.wait(600) == 0, migrate.output()[-3000:]

        timings["swap"] = beside(stream, swap)
        with httpx.Client(base_url=stream.base_url, timeout=10) as client:
            old_stored = stream.post(client, _first_filled_delivery())
            old_coded = stream.post(client, _delivery_of(conninfo, old_code.ids[0]))
    log.warning(
        "online migration drill, %d rows: %s; %d webhooks during the swap, slowest answer %.3f s",
        ROWS, {k: round(v, 1) for k, v in timings.items()}, len(stream.answers), stream.slowest,
    )  # fmt: skip

    assert all(status in (200, 202) for _, status, _ in stream.answers), [
        a for a in stream.answers if a[1] >= 300
    ]
    sent = [(d, a) for d, _, a in stream.answers[:-2]]
    assert len(sent) > 20 and not any(a["duplicate"] for _, a in sent)
    ids = [a["id"] for _, a in sent]
    assert ids == sorted(ids) and ids[0] > before[1]  # ids keep increasing
    with psycopg.connect(conninfo) as conn:
        stored = dict(
            conn.execute(
                "SELECT delivery_id, count(*) FROM webhook_events"
                " WHERE source = 'github' AND delivery_id = ANY(%s) GROUP BY delivery_id",
                ([d for d, _ in sent],),
            ).fetchall()
        )
        partitioned = conn.execute(
            "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = 'webhook_events'::regclass"
        ).fetchone()
    assert stored == {d: 1 for d, _ in sent}  # every delivery stored exactly once
    assert partitioned == (1,)
    assert old_stored["duplicate"] and old_stored["id"] == 1
    assert old_coded == {"id": old_code.ids[0], "duplicate": True}


def _first_filled_delivery() -> str:
    """The delivery id fill_single_table gave its first row (a GitHub one: n = 1)."""
    import hashlib

    return str(uuid.UUID(hashlib.md5(b"1").hexdigest()))


def _delivery_of(conninfo: str, event_id: int) -> str:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT delivery_id FROM webhook_events WHERE id = %s", (event_id,))
        found = row.fetchone()
    assert found is not None
    return str(found[0])
