"""The processing baseline: a bare SQL claim-and-mark loop, no broker, no handler, no effect.

    python -m bench.bare_claims POSTGRES_CONNINFO THREADS [BATCH]

Each thread claims up to BATCH due rows (10 unless given) with one `FOR UPDATE SKIP
LOCKED` statement that sets the lease (one transaction), then marks them done (a second
one), until none is due. This is the least any worker must do per row, so the real
workers' rate is a ratio of it. The processing target is set against 10 rows a claim, the
ids one doorbell message carried when it was set; the loop's rate grows with its claims'
size (bench/pipeline.py also reports it at the workers' pass size).
"""

from __future__ import annotations

import sys
import threading
import uuid

import psycopg

BATCH = 10  #: rows per claim unless given: the baseline of the processing target
MAX_LOOPS = 1_000_000  #: claims one thread makes at most (the loop is bounded)

CLAIM = """
UPDATE webhook_events SET status = 'processing', attempts = attempts + 1,
       lease_owner = %(owner)s, lease_expires_at = now() + interval '5 minutes'
 WHERE id IN (SELECT id FROM webhook_events
               WHERE status = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
RETURNING id
"""
MARK_DONE = """
UPDATE webhook_events SET status = 'done', processed_at = now(),
       lease_owner = NULL, lease_expires_at = NULL
 WHERE id = ANY(%(ids)s) AND status = 'processing' AND lease_owner = %(owner)s
"""


def drain(conninfo: str, batch: int = BATCH) -> None:
    owner = f"bare-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo) as conn:
        for _ in range(MAX_LOOPS):
            with conn.transaction():
                ids = [row[0] for row in conn.execute(CLAIM, {"owner": owner, "batch": batch})]
            if not ids:
                return
            with conn.transaction():
                conn.execute(MARK_DONE, {"ids": ids, "owner": owner})


def main() -> None:
    conninfo, threads = sys.argv[1], int(sys.argv[2])
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else BATCH
    workers = [threading.Thread(target=drain, args=(conninfo, batch)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
