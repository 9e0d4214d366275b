"""Paired runs of one benchmark on two commits: is the newer one as fast as the older?

    .venv/bin/python -m bench.compare main HEAD --part ingress --rounds 3
    .venv/bin/python -m bench.compare main HEAD --part mix --rounds 3 -- --events 10000

Each commit is checked out in a temporary worktree and measured with its own code (its
bench and its service), one round at a time, alternating which commit goes first, so both
see the machine minutes apart: the machine's speed moves by tens of per cent within an
hour, and only runs this close make a fair pair. Prints each figure's ratio new / old per
round and the median; passes when every median is no worse than the tolerance (5 % by
default). Needs what the part itself needs (docs/performance.md); `--part mix` reads the
drain rates `bench.mix` writes to its results, so both commits need a `bench.mix` that
writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: What one round of a part reports: a figure's name, its value, and whether higher is better.
Figures = dict[str, tuple[float, bool]]


@dataclass(frozen=True)
class Part:
    module: str  #: the benchmark module, run as `python -m bench.<module> --rounds 1 …`
    results: str  #: its results file in bench/results/
    figures: Callable[[dict[str, Any]], Figures]
    arguments: tuple[str, ...] = ()  #: given to the part before the caller's own


def ingress_figures(results: dict[str, Any]) -> Figures:
    """The ingress's rate and server CPU per webhook at each closed loop."""
    out: Figures = {}
    for row in results["rows"]:
        if row["target"] != "ingress, ringing Redis" or not row["load"].endswith("conn."):
            continue
        out[f"req/s, {row['load']}"] = (float(row["per_second"]), True)
        out[f"server µs/webhook, {row['load']}"] = (float(row["server_us"]), False)
    return out


def mix_figures(results: dict[str, Any]) -> Figures:
    """The drain rate of each workload."""
    rates: dict[str, list[float]] = results["meta"]["rates"]
    return {f"{name} drain/s": (statistics.median(values), True) for name, values in rates.items()}


PARTS = {
    "ingress": Part("ingress", "ingress.json", ingress_figures),
    # The drain rates only: the steady latency run is left out (--latency-rate 0).
    "mix": Part("mix", "mix.json", mix_figures, ("--latency-rate", "0")),
}


def checkout(ref: str, into: Path) -> Path:
    """The commit `ref` in a detached worktree under `into`."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    tree = into / commit[:12]
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(tree), commit], cwd=ROOT, check=True
    )
    return tree


def one_round(tree: Path, part: Part, extra: list[str]) -> Figures:
    """One round of `part` with the code of `tree` (its modules come first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-m", f"bench.{part.module}", "--rounds", "1", *part.arguments, *extra]
    subprocess.run(argv, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    return part.figures(json.loads((tree / "bench" / "results" / part.results).read_text()))


def ratio(new: float, old: float, higher_is_better: bool) -> float:
    """new / old, oriented so that above 1 is better. A figure of 0 means a broken run,
    which no ratio may pass off as a result."""
    if not old or not new:
        raise SystemExit(f"a round measured 0 (old {old}, new {new}): look at its run")
    return new / old if higher_is_better else old / new


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("old", help="the commit measured as the baseline (a ref or a hash)")
    parser.add_argument("new", help="the commit compared with it")
    parser.add_argument("--part", choices=sorted(PARTS), required=True)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each commit")
    parser.add_argument("--tolerance", type=float, default=0.05, help="worst allowed slowdown")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    extra = argv[split + 1 :]  # after --: arguments for the part itself
    part = PARTS[args.part]
    load_before = os.getloadavg()
    rounds: list[tuple[Figures, Figures]] = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = [checkout(args.old, Path(tmp)), checkout(args.new, Path(tmp))]
        try:
            for round_ in range(args.rounds):
                order = trees if round_ % 2 == 0 else trees[::-1]
                measured = {tree: one_round(tree, part, extra) for tree in order}
                rounds.append((measured[trees[0]], measured[trees[1]]))
        finally:
            for tree in trees:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
    print(f"{args.part}: {args.new} / {args.old}, {args.rounds} rounds, {os.cpu_count()} cores, "
          f"load {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")  # fmt: skip
    failed = False
    for name, (_, higher_is_better) in rounds[0][0].items():
        ratios = [ratio(new[name][0], old[name][0], higher_is_better) for old, new in rounds]
        median = statistics.median(ratios)
        ok = median >= 1 - args.tolerance
        failed |= not ok
        shown = ", ".join(f"{r:.3f}" for r in ratios)
        print(f"  {name}: median {median:.3f} ({shown}) {'pass' if ok else 'FAIL'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
