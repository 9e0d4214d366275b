"""Every benchmark in one command: one table, each target with pass or fail.

    .venv/bin/python -m bench.run            # the full sizes (docs/performance.md)
    .venv/bin/python -m bench.run --quick    # small sizes: a smoke run of every step

Writes bench/results/summary.json and summary.md (and ingress.json/.md). Each target is a
ratio against a baseline measured in the same run, or a figure; the machine is shared, so
the table records the core count and the load average before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import ingress, mix, mix_growth, pipeline
from bench.common import machine_facts, postgres_database, print_table, write_results


@dataclass(frozen=True)
class Sizes:
    ingress_seconds: float  #: seconds of each closed-loop and steady ingress run
    ingress_rate: float  #: webhooks per second of the steady ingress run
    backlog: int  #: credit-pack events in the processing backlog
    growth_events: int  #: events drained for each side of the pack-only growth ratio
    finished_rows: int  #: finished rows in the table for the growth ratios
    memory_events: int  #: webhooks through the ingress for the RSS growth
    latency_rate: float  #: webhooks per second of the latency runs
    latency_seconds: float  #: seconds of each latency run
    rounds: int  #: rounds of the ingress, processing and mix measurements (targets use the medians)
    mix_events: int  #: webhooks of each workload of the realistic mix (bench/mix.py)


FULL = Sizes(10.0, 1000.0, 100_000, 20_000, 1_000_000, 200_000, 200.0, 30.0, 3, 20_000)
QUICK = Sizes(3.0, 1000.0, 5_000, 3_000, 100_000, 20_000, 200.0, 5.0, 1, 3_000)


def ingress_rows(sizes: Sizes) -> list[dict[str, Any]]:
    rows, meta = ingress.measure(sizes.ingress_seconds, sizes.ingress_rate, rounds=sizes.rounds)
    write_results("ingress", rows, meta)
    out = []
    for connections in (16, 64):
        for key, baseline, target in (
            ("bare", ingress.BARE, 0.45 if connections == 16 else 0.6),
            ("naive", ingress.NAIVE, 2.5),
        ):
            pairs = [
                "{:,} vs {:,}".format(
                    *(
                        ingress.round_rate(rows, round_, connections, name)
                        for name in (ingress.INGRESS, baseline)
                    )
                )
                for round_ in range(1, sizes.rounds + 1)
            ]
            ratios: list[float] = meta[f"ratio_to_{key}_{connections}_rounds"]  # type: ignore[assignment]
            ratio = float(meta[f"ratio_to_{key}_{connections}"])  # type: ignore[arg-type]
            out.append(
                {"benchmark": "ingress",
                 "measure": f"ingress ringing Redis / {key}, {connections} connections",
                 "figure": f"median {ratio:.2f}x of rounds "
                 + ", ".join(f"{r:.2f}x ({p}/s)" for r, p in zip(ratios, pairs, strict=True)),
                 "target": f">= {target}x", "pass": ratio >= target}
            )  # fmt: skip
    p99_16 = float(meta["p99_ms_16"])  # type: ignore[arg-type]
    out.append({"benchmark": "ingress", "measure": "answer time, 16 connections",
                "figure": f"median p99 {p99_16} ms", "target": "p99 < 10 ms",
                "pass": p99_16 < 10})  # fmt: skip
    steady = [r for r in rows if str(r["load"]).startswith("steady")]
    p99 = float(meta["steady_p99_ms"])  # type: ignore[arg-type]
    answered = sum(int(str(r["answered"])) for r in steady)
    ok = sum(int(str(r["2xx"])) for r in steady)
    out.append({"benchmark": "ingress",
                "measure": f"steady {int(sizes.ingress_rate)}/s, answer time ({ok}/{answered} 2xx)",
                "figure": f"median p99 {p99} ms of rounds "
                          + ", ".join(f"p50 {r['p50_ms']}/p99 {r['p99_ms']} ms" for r in steady),
                "target": "p99 < 20 ms", "pass": p99 < 20 and ok == answered})  # fmt: skip
    out.append({"benchmark": "ingress", "measure": "rows stored vs 2xx answered",
                "figure": meta["ingress_rows_vs_2xx"], "target": "(all 2xx stored)",
                "pass": bool(meta["ingress_every_2xx_stored"])})  # fmt: skip
    return out


def in_database(measure: Callable[[str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    with postgres_database("outbox_bench_run") as url:
        return measure(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument(
        "--only",
        choices=["ingress", "processing", "mix", "mix-growth", "growth", "memory", "latency"],
        action="append",
        help="run only these parts (repeatable)",
    )
    parser.add_argument("--backlog", type=int, help="override the processing backlog size")
    parser.add_argument("--growth-events", type=int, help="override the growth drain size")
    parser.add_argument("--memory-events", type=int, help="override the RSS run's webhooks")
    parser.add_argument("--latency-rate", type=float, help="override the latency runs' rate")
    parser.add_argument(
        "--shared", action="store_true",
        help="mix and mix-growth on the shared server instead of a private cluster each",
    )  # fmt: skip
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    overrides = {
        "backlog": args.backlog,
        "growth_events": args.growth_events,
        "memory_events": args.memory_events,
        "latency_rate": args.latency_rate,
    }
    sizes = dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v})
    parts: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "ingress": lambda: ingress_rows(sizes),
        "processing": lambda: in_database(
            lambda u: pipeline.measure_backlog(u, sizes.backlog, sizes.rounds)
        ),
        # On a private cluster with production's settings each (or --shared).
        "mix": lambda: mix.measure_on(
            sizes.mix_events, sizes.rounds, latency_rate=500.0, shared=args.shared
        )[0],
        "mix-growth": lambda: mix_growth.measure(
            sizes.mix_events, sizes.rounds, shared=args.shared, finished=sizes.finished_rows
        )[0],
        "growth": lambda: in_database(
            lambda u: pipeline.measure_growth(u, sizes.growth_events, sizes.finished_rows)
        ),
        "memory": lambda: in_database(lambda u: pipeline.measure_memory(u, sizes.memory_events)),
        "latency": lambda: in_database(
            lambda u: pipeline.measure_latency(u, sizes.latency_rate, sizes.latency_seconds)
        ),
    }
    started, load_before = time.time(), os.getloadavg()
    rows: list[dict[str, Any]] = []
    for name, part in parts.items():
        if args.only and name not in args.only:
            continue
        part_started = time.time()
        try:
            rows += part()
        except Exception as exc:
            rows.append({"benchmark": name, "measure": "did not complete",
                         "figure": f"{type(exc).__name__}: {str(exc)[:200]}",
                         "target": "", "pass": False})  # fmt: skip
        print(f"[{name}: {time.time() - part_started:.0f} s]", flush=True)
    for row in rows:
        row["pass"] = {True: "pass", False: "FAIL"}.get(row["pass"], row["pass"])
    meta = {
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        **machine_facts(load_before),
        "minutes": round((time.time() - started) / 60, 1),
        "sizes": sizes.__dict__,
        "postgres": "the shared server, 127.0.0.1:5432 (synchronous_commit on); mix and "
        + (
            "mix-growth on it too (--shared)"
            if args.shared
            else "mix-growth: a private "
            "cluster each, production's settings (bench.common.private_postgres)"
        ),
        "redis": "a private redis-server per measurement",
    }
    print_table(rows)
    for key, value in meta.items():
        print(f"{key}: {value}")
    write_results("summary" + ("-quick" if args.quick else ""), rows, meta)


if __name__ == "__main__":
    main()
