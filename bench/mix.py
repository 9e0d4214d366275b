"""What production sends: a realistic mix of GitHub and Stripe webhooks through the ingress,
drained by `outbox worker -p 2`, every effect checked exact at the end.

    .venv/bin/python -m bench.mix [--events 20000] [--rounds 3] [--latency-rate 500] [--shared]

Workloads, each sent through a real `outbox serve` (signed as GitHub and Stripe sign), with
no worker running, then drained by 2 worker processes rung once for every stored row (as
bench.pipeline's backlog); the rate is rows over the time from that ring to the last row
finished:

- bench-shaped checkouts: bench.pipeline's purchase (the Pro pack in metadata, the account
  in `client_reference_id`, no customer);
- realistic checkouts: a Stripe customer on every session, 70% naming the account by
  `client_reference_id` and 30% by `metadata.github_account_id`, 80% naming the pack in
  metadata and 20% only through the line items the event carries (a quarter of those with
  quantity 2, some sessions with two packs), packs of the whole seed catalog;
- the mix (MIX): 500 installed accounts (installed, with their welcome grants, before
  timing); 55% GitHub events the App stores and does not apply; 5% installation
  repositories added/removed; 15% realistic checkouts; 12% subscription created/updated
  over 1,000 subscriptions; 5% renewal invoices paid/failed for them; 3% partial refunds of
  purchases made before timing; 5% Stripe types with no handler.

Checked after every drain: no row left unfinished or dead, every row the mix means to skip
skipped, every account's balance equal to what its welcome grant, purchases and refunds
make (an independent sum), every subscription's final status equal to a small model of
Stripe's rules (docs/billing.md), each checkout granted once. The mix with 1,000,000
finished rows in the table is bench/mix_growth.py.

By default the database lives on a PostgreSQL cluster of the benchmark's own, started on
--port (or a free one) with production's settings (bench.common.PRODUCTION_SETTINGS:
autovacuum on, fsync on) and the shared server's shared_buffers, stopped afterwards; it
loads pg_stat_statements, and the statements that took the most server time during each
workload's drains are printed, per row drained. `--shared` runs on the shared server at
127.0.0.1:5432 instead (autovacuum off on this machine, which no deployment runs with).
"""

from __future__ import annotations

import argparse
import os
import statistics
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, func, select

from bench.common import (
    add_server_arguments,
    describe_server,
    machine_facts,
    postgres,
    postgres_database,
    print_meta,
    print_table,
    reset_statements,
    top_statements,
    write_results,
)
from bench.loadgen import closed_loop, open_loop
from bench.loadgen import run as run_load
from bench.mix_workload import (
    GITHUB_SECRET,
    Expected,
    Request,
    Workload,
    installations,
    refunds_for,
)
from bench.pipeline import WARMUP_SECONDS, drain_rate, stack, steady_lag, wait_drained
from bench.workload import ACCOUNTS, STRIPE_SECRET, WELCOME_CREDITS, seed
from domain.ledger_tables import CreditEntry
from domain.subscriptions import Subscription
from outbox.models import Status, WebhookEvent
from tests.services import OutboxProcess, RedisServer, free_port, outbox_env

SEND_CHUNK = 10_000  #: requests signed at once (Stripe signatures age: 300 s tolerance)
SENDERS = 16  #: concurrent senders through the ingress
LATENCY_SECONDS = 30.0  #: length of the steady run of the mix (--latency-rate)


# --- running ----------------------------------------------------------------------------


@contextmanager
def ingress(url: str) -> Iterator[int]:
    """`outbox serve` on a free port, ringing a private redis-server that no worker reads:
    what it stores waits for the drain (bench.pipeline's backlog, sent through the ingress)."""
    with RedisServer() as redis:
        env = outbox_env(
            url,
            redis_url=redis.url,
            stripe_webhook_secret=STRIPE_SECRET,
            github_webhook_secret=GITHUB_SECRET,
            stripe_mode="any",
            log_level="WARNING",
        )
        port = free_port()
        with OutboxProcess(["serve", "--port", str(port)], env, port=port):
            yield port


def send(port: int, requests: list[Request]) -> None:
    """Deliver every request; each must be answered 200."""
    ok = 0
    for start in range(0, len(requests), SEND_CHUNK):
        chunk = [r.signed(port) for r in requests[start : start + SEND_CHUNK]]
        result = run_load(closed_loop("127.0.0.1", port, chunk, SENDERS, 600.0))
        ok += result.statuses.get(200, 0)
    if ok != len(requests):
        raise RuntimeError(f"{len(requests) - ok} of {len(requests)} webhooks not answered 200")


def drain(url: str, count: int) -> float:
    """2 worker processes (and the sweeper) rung once for every stored row; rows per second."""
    settings = {"github_webhook_secret": GITHUB_SECRET, "welcome_credits": WELCOME_CREDITS}
    # With `outbox sweep` beside the workers, as deployed: a row that no pass happened to
    # claim (a claim skips an object another claim is looking at) is rung again.
    with stack(url, sweeper=True, **settings) as s:
        try:
            # Every webhook of the workload counts: a type no handler applies was stored
            # finished by the ingress (ingress/stored_only.py), which is its processing.
            return drain_rate(s, count, counted=count)
        except AssertionError:
            raise RuntimeError(f"not drained: {unfinished_rows(s.engine)}") from None


def unfinished_rows(engine: Engine) -> list[tuple[Any, ...]]:
    """What keeps a drain from finishing: unfinished rows by type, status and last error."""
    query = (
        select(
            WebhookEvent.event_type,
            WebhookEvent.status,
            WebhookEvent.last_error,
            WebhookEvent.attempts,
            WebhookEvent.interruptions,
            func.count(),
        )
        .where(WebhookEvent.status.in_([Status.PENDING.value, Status.PROCESSING.value]))
        .group_by(
            WebhookEvent.event_type,
            WebhookEvent.status,
            WebhookEvent.last_error,
            WebhookEvent.attempts,
            WebhookEvent.interruptions,
        )
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query).all()][:10]


def deliver_and_drain(url: str, requests: list[Request]) -> float:
    with ingress(url) as port:
        send(port, requests)
    return drain(url, len(requests))


def latency(url: str, rate: float, seconds: float, expected: Expected) -> dict[str, float]:
    """Webhook -> effect at a steady `rate` per second of the mix, through the ingress, with
    the doorbell ringing workers that run throughout (and the sweeper beside them): p50 and
    p99 seconds from each row's `received_at` to its `processed_at`, over the rows of the run
    a worker finished, received in the `seconds` after WARMUP_SECONDS of the same stream
    (bench/pipeline.py `steady_lag`)."""
    workload = Workload("lat" + uuid.uuid4().hex[:4], expected, seed_value=zlib.crc32(b"lat"))
    length = seconds + WARMUP_SECONDS
    count = int(rate * length)
    deliver_and_drain(url, workload.refundable_purchases(refunds_for(count)))
    requests = workload.mix(count)
    workload.finish()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            before = conn.scalar(select(func.coalesce(func.max(WebhookEvent.id), 0)))
        settings = {"github_webhook_secret": GITHUB_SECRET, "welcome_credits": WELCOME_CREDITS}
        with stack(url, ingress=True, sweeper=True, **settings) as s:
            assert s.ingress_port is not None
            signed = [r.signed(s.ingress_port) for r in requests]
            result = run_load(open_loop("127.0.0.1", s.ingress_port, signed, rate, length))
            wait_drained(engine, timeout=120)
        finished = (Status.DONE.value, Status.SKIPPED.value)
        ours = WebhookEvent.id > before
        with engine.connect() as conn:
            # Over the rows a worker applied or skipped (attempts > 0): a type the App only
            # stores is finished by the ingress itself and would only flatter the percentiles.
            lag = steady_lag(
                conn, ours, WebhookEvent.status.in_(finished), WebhookEvent.attempts > 0
            )
            done = conn.scalar(select(func.count()).where(ours, WebhookEvent.status.in_(finished)))
    finally:
        engine.dispose()
    return {**lag, "done": int(done or 0), "sent": result.sent,
            "ok": result.statuses.get(200, 0)}  # fmt: skip


def check(engine: Engine, expected: Expected) -> list[str]:
    """What differs from `expected`; empty when every effect is exact."""
    problems = []
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)
            ).all()
        )
        balances = dict(
            conn.execute(
                select(CreditEntry.account_id, func.sum(CreditEntry.amount)).group_by(
                    CreditEntry.account_id
                )
            ).all()
        )
        grants = conn.scalar(
            select(func.count()).select_from(CreditEntry).where(CreditEntry.key.like("pack:%"))
        )
        subs = dict(conn.execute(select(Subscription.id, Subscription.status)).all())
    for status in (Status.PENDING, Status.PROCESSING, Status.DEAD):
        if statuses.get(status.value):
            problems.append(f"{statuses[status.value]} rows {status.value}")
    if statuses.get(Status.SKIPPED.value, 0) != expected.skipped:
        problems.append(f"{statuses.get(Status.SKIPPED.value, 0)} skipped, not {expected.skipped}")
    wrong = {a: (balances.get(a), c) for a, c in expected.credits.items() if balances.get(a) != c}
    if wrong or set(balances) - set(expected.credits):
        problems.append(f"{len(wrong)} balances wrong, e.g. {list(wrong.items())[:3]}")
    if grants != expected.grants:
        problems.append(f"{grants} pack grants, not {expected.grants}")
    off = {s: (subs.get(s), st) for s, st in expected.statuses.items() if subs.get(s) != st}
    if off or len(subs) != len(expected.statuses):
        problems.append(f"{len(off)} subscription statuses wrong, e.g. {list(off.items())[:3]}")
    return problems


def measure(
    url: str, events: int, rounds: int, latency_rate: float = 0.0, admin: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The three workloads' rounds (and the steady run) on database `url`; with `admin`, a
    server that loads pg_stat_statements, each workload's top statements over its last
    round (its webhooks through the ingress and their drain; the mix's refundable
    purchases too)."""
    engine = create_engine(url)
    expected = Expected()
    rates: dict[str, list[float]] = {"bench": [], "realistic": [], "mix": []}
    stats: dict[str, Any] = {}
    problems: list[str] = []
    try:
        seed(engine)  # the catalog, accounts 1..1000 with their welcome grants
        for account_id in range(1, ACCOUNTS + 1):
            expected.add(account_id, WELCOME_CREDITS)
        deliver_and_drain(url, installations())  # made before timing, applied before timing
        for round_ in range(rounds):
            last_round = round_ == rounds - 1
            for name in ("bench", "realistic", "mix"):
                if admin is not None and last_round:
                    reset_statements(admin)
                rates[name].append(one_round(url, name, f"r{round_}{name[0]}", events, expected))
                if admin is not None and last_round:
                    stats[name] = top_statements(admin, url, events)
                problems += check(engine, expected)
        lag: dict[str, float] = {}
        if latency_rate:
            lag = latency(url, latency_rate, LATENCY_SECONDS, expected)
            problems += check(engine, expected)
    finally:
        engine.dispose()
    meta = {"subscriptions": len(expected.statuses), "rates": rates, "statements": stats}
    return rows(rates, problems, events, rounds, lag, latency_rate), meta


def measure_on(
    events: int, rounds: int, latency_rate: float = 0.0, *, shared: bool = False,
    port: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """measure() in a database of its own on a private production-configured cluster (or,
    `shared`, on the shared server), the server's settings in the facts."""
    with postgres(shared, port) as admin, postgres_database("outbox_bench_mix", admin) as url:
        table, meta = measure(url, events, rounds, latency_rate, None if shared else admin)
        meta["server"] = describe_server(admin)
    return table, meta


def one_round(url: str, name: str, run: str, events: int, expected: Expected) -> float:
    workload = Workload(run + uuid.uuid4().hex[:4], expected, seed_value=zlib.crc32(run.encode()))
    if name == "bench":
        return deliver_and_drain(url, workload.bench_checkouts(events))
    if name == "realistic":
        return deliver_and_drain(url, workload.checkouts(events))
    refunds = refunds_for(events)
    deliver_and_drain(url, workload.refundable_purchases(refunds))  # before timing
    requests = workload.mix(events)
    workload.finish()
    return deliver_and_drain(url, requests)


def rows(
    rates: dict[str, list[float]],
    problems: list[str],
    events: int,
    rounds: int,
    lag: dict[str, float],
    latency_rate: float,
) -> list[dict[str, Any]]:
    median = {name: statistics.median(values) for name, values in rates.items()}
    shown = {name: ", ".join(f"{v:,.0f}" for v in values) for name, values in rates.items()}
    out: list[dict[str, Any]] = []

    def row(measure: str, figure: str, target: str, passed: Any) -> None:
        out.append(
            {
                "benchmark": "mix",
                "measure": measure,
                "figure": figure,
                "target": target,
                "pass": passed,
            }
        )

    row(
        f"bench-shaped checkouts, {events:,} through the ingress, 2 workers",
        f"median {median['bench']:,.0f}/s of {shown['bench']}",
        "(baseline)",
        "",
    )
    row(
        f"realistic checkouts, {events:,}",
        f"median {median['realistic']:,.0f}/s of {shown['realistic']}",
        "(measured)",
        "",
    )
    row(
        f"the mix, {events:,}",
        f"median {median['mix']:,.0f}/s of {shown['mix']}",
        ">= 2,000/s",
        median["mix"] >= 2000,
    )
    row(
        "mix / bench-shaped",
        f"{median['mix'] / median['bench']:.2f}x",
        ">= 0.8x",
        median["mix"] / median["bench"] >= 0.8,
    )
    row(
        "realistic / bench-shaped checkouts",
        f"{median['realistic'] / median['bench']:.2f}x",
        ">= 0.9x",
        median["realistic"] / median["bench"] >= 0.9,
    )
    if lag:
        row(
            f"webhook -> effect, the mix at a steady {latency_rate:,.0f}/s for "
            f"{LATENCY_SECONDS:.0f} s after {WARMUP_SECONDS:.0f} s of warm-up, with the "
            f"doorbell ({lag['done']}/{lag['sent']} finished)",
            f"p50 {lag['p50'] * 1000:.0f} ms, p99 {lag['p99'] * 1000:.0f} ms "
            f"(with warm-up {lag['p99_with_warmup'] * 1000:.0f} ms)",
            "p99 < 100 ms",
            lag["p99"] < 0.1 and lag["done"] == lag["sent"] == lag["ok"],
        )
    row(
        f"every effect exact after each of {rounds} rounds",
        "; ".join(problems[:5]) or "balances, statuses, grants, skips exact",
        "(all exact)",
        not problems,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="webhooks per workload")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (the medians are taken)")
    parser.add_argument(
        "--latency-rate", type=float, default=500.0, help="steady rate of the latency run (0: none)"
    )
    add_server_arguments(parser)
    args = parser.parse_args()
    load_before = os.getloadavg()
    table, meta = measure_on(args.events, args.rounds, args.latency_rate, shared=args.shared,
                             port=args.port)  # fmt: skip
    meta.update({"events": args.events, "rounds": args.rounds, **machine_facts(load_before)})
    print_table(table)
    print_meta(meta)
    write_results("mix", table, meta)


if __name__ == "__main__":
    main()
