"""Route resolution time with many mappings (issue: < 50 µs per cached lookup).

Builds a RoutingTable of N mappings (a realistic mix of exact names and
patterns, all with chains) in memory and times `resolve`: the first lookup of
each name (a scan of the sorted patterns) and repeated lookups (the cache),
against a baseline of a plain dict lookup measured in the same run.

    .venv/bin/python benchmarks/bench_routing.py [--mappings 1000] [--names 2000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from routing.resolution import Mapping, RoutingTable, Target


def build(n: int, rng: random.Random) -> RoutingTable:
    providers = [Target("provider", f"p{i}", f"up-{i}") for i in range(8)]
    mappings = []
    for i in range(n):
        family = f"fam{i % 97}"
        kind = i % 4
        pattern = {0: f"{family}-model-{i}", 1: f"{family}-*", 2: f"{family}-v?-{i}", 3: f"*-{i}"}[
            kind
        ]
        chain = (*rng.sample(providers, 2), Target("local", "demo"))
        mappings.append(Mapping(i, pattern, rng.randint(0, 5), chain))
    return RoutingTable(mappings, frozenset({"demo"}), cloud_routing=True)


def per_call_us(fn, names: list[str], rounds: int) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for _ in range(rounds):
        for name in names:
            fn(name)
    return (time.perf_counter() - started) / (rounds * len(names)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mappings", type=int, default=1000)
    parser.add_argument("--names", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(0)
    print(f"building a table of {args.mappings} mappings ...", flush=True)
    table = build(args.mappings, rng)
    names = [
        f"fam{rng.randrange(97)}-model-{rng.randrange(args.mappings)}" for _ in range(args.names)
    ]
    names += [f"unknown-{i}" for i in range(args.names // 10)]

    print("timing first lookups (cold: scan of the sorted patterns) ...", flush=True)
    started = time.perf_counter()
    for name in names:
        table.resolve(name)
    cold = (time.perf_counter() - started) / len(names) * 1e6

    print("timing cached lookups ...", flush=True)
    cached = per_call_us(table.resolve, names, rounds=50)
    baseline_dict = {name: name for name in names}
    baseline = per_call_us(baseline_dict.get, names, rounds=50)

    goal = 50.0
    print()
    print(f"{'figure':<38}{'µs/lookup':>12}")
    print(f"{'dict.get baseline (same names)':<38}{baseline:>12.3f}")
    print(f"{'resolve, first lookup (uncached)':<38}{cold:>12.1f}")
    print(f"{'resolve, cached':<38}{cached:>12.3f}")
    print(f"cached / dict baseline ratio: {cached / baseline:.1f}x")
    print(f"goal: cached < {goal:.0f} µs with {args.mappings} mappings -> "
          f"{'PASS' if cached < goal else 'MISS'}")  # fmt: skip


if __name__ == "__main__":
    main()
