"""`bench_overhead.py --transports`: the gateway's upstream HTTP client, library or hand-written.

    .venv/bin/python benchmarks/bench_overhead.py --transports [--seconds 5] [--rounds 2]

One fake upstream and one routing set-up; one gateway process per transport
(benchmarks/transport_gateway.py picks it): httpx's own AsyncHTTPTransport
and httpx-aiohttp's AiohttpTransport, the gateway's own (and up to commit
654ab61, the hand-written one it replaced). Measured in the same run, against
the upstream called directly: added latency (p50/p99, c=1, requests
interleaved over every target) for whole answers and for a stream's first
content, and requests/s at concurrency 32
(wrk; `--rounds` passes over the targets in turn, the median kept) with the
gateway's CPU per request. The rule printed at the end: a hand-written
transport is kept only if it beats the best library by more than 15 % on both
requests/s at c=32 and added p50 latency.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
from pathlib import Path

from bench_overhead import (
    BODY,
    GATEWAY_ENV,
    STREAM_BODY,
    Result,
    interleaved,
    ms,
    prepare_gateway,
    start_upstream,
)
from common import ServerProcess, gateway_server
from common import progress as say
from wrk_load import wrk

MARGIN = 1.15  # how much better a hand-written transport must be to be kept
LIBRARIES = ("httpx", "aiohttp")


def available() -> list[str]:
    names = ["httpx", "aiohttp"]
    if importlib.util.find_spec("inference.cloud.http11") is not None:
        names.insert(0, "lean")  # the hand-written transport, up to commit 654ab61
    return names


def run_transports(args: argparse.Namespace, workdir: Path, servers: list[ServerProcess]) -> None:
    upstream = start_upstream(workdir, servers)
    say("migrating, configuring routing and a client key (one data dir for every gateway)")
    data, key = prepare_gateway(workdir, upstream.url)
    names = available()
    gateways: dict[str, ServerProcess] = {}
    for name in names:
        say(f"starting a gateway with the {name} upstream transport")
        gateway = gateway_server(data, module="benchmarks.transport_gateway",
                                 BENCH_UPSTREAM_TRANSPORT=name, **GATEWAY_ENV)  # fmt: skip
        servers.append(gateway)
        gateway.start()
        gateways[name] = gateway
    targets = [upstream, *gateways.values()]
    urls, n = [t.url for t in targets], args.requests
    say(f"c=1: {n} whole answers and {n} streams per target, interleaved over {len(urls)} targets")
    lat = interleaved(urls, key, BODY, n, args.warmup)
    ttfb = interleaved(urls, key, STREAM_BODY, n, args.warmup)
    rps: dict[str, dict[str, list[Result]]] = {"plain": {}, "stream": {}}
    for mode, body in (("plain", BODY), ("stream", STREAM_BODY)):
        for target in targets:
            wrk(target, key, body, 1, workdir)  # warm-up: fills the keep-alive pools
        for turn in range(args.rounds):
            for who, target in zip(["direct", *names], targets, strict=True):
                say(f"c=32 {mode}, round {turn + 1}/{args.rounds}: wrk {args.seconds:g}s, {who}")
                r = wrk(target, key, body, args.seconds, workdir)
                rps[mode].setdefault(who, []).append(r)
                say(f"  {r['rps']:.0f} req/s, server CPU {r['cpu_ms']:.3f} ms/request")
    report(names, lat, ttfb, rps, args)


def median(results: list[Result], field: str) -> float:
    return statistics.median(r[field] for r in results)


def report(
    names: list[str],
    lat: list[list[float]],
    ttfb: list[list[float]],
    rps: dict[str, dict[str, list[Result]]],
    args: argparse.Namespace,
) -> None:
    print(f"\nload: c=1 raw-socket client, {args.requests} requests per target, interleaved; "
          f"c=32 wrk -t1, {args.rounds} x {args.seconds:g} s per target, median")  # fmt: skip
    print(f"direct (upstream alone): plain p50 {ms(lat[0], 50):.3f} ms, stream TTFB p50 "
          f"{ms(ttfb[0], 50):.3f} ms, {median(rps['plain']['direct'], 'rps'):.0f} req/s plain, "
          f"{median(rps['stream']['direct'], 'rps'):.0f} req/s stream")  # fmt: skip
    header = ("transport", "req/s c=32", "stream req/s", "CPU ms/req", "added p50",
              "added p99", "TTFB added p50", "TTFB added p99")  # fmt: skip
    rows: list[tuple[str, ...]] = [header]
    figures: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names, start=1):
        f = figures[name] = {
            "rps": median(rps["plain"][name], "rps"),
            "stream_rps": median(rps["stream"][name], "rps"),
            "cpu_ms": median(rps["plain"][name], "cpu_ms"),
            "p50": ms(lat[i], 50) - ms(lat[0], 50),
            "p99": ms(lat[i], 99) - ms(lat[0], 99),
            "ttfb50": ms(ttfb[i], 50) - ms(ttfb[0], 50),
            "ttfb99": ms(ttfb[i], 99) - ms(ttfb[0], 99),
        }
        rows.append((name, f"{f['rps']:.0f}", f"{f['stream_rps']:.0f}", f"{f['cpu_ms']:.3f}",
                     *(f"+{f[k]:.3f} ms" for k in ("p50", "p99", "ttfb50", "ttfb99"))))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    rows.insert(1, tuple("-" * w for w in widths))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    libraries = [name for name in names if name in LIBRARIES]
    best = max(libraries, key=lambda name: figures[name]["rps"])
    b = figures[best]
    for other in libraries:
        if other != best:
            o = figures[other]
            print(f"\n{best} / {other}: req/s {b['rps'] / o['rps']:.2f}x, stream req/s "
                  f"{b['stream_rps'] / o['stream_rps']:.2f}x, added p50 "
                  f"{b['p50']:.3f} vs {o['p50']:.3f} ms")  # fmt: skip
    if "lean" not in figures:
        print(f"\nbest library transport: {best}")
        return
    lean = figures["lean"]
    rps_ratio, latency_ratio = lean["rps"] / b["rps"], b["p50"] / max(lean["p50"], 1e-6)
    print(f"\nhand-written vs the best library ({best}): req/s at c=32 {rps_ratio:.2f}x, "
          f"stream req/s {lean['stream_rps'] / b['stream_rps']:.2f}x, added p50 latency "
          f"{lean['p50']:.3f} vs {b['p50']:.3f} ms ({latency_ratio:.2f}x less), TTFB added "
          f"p50 {lean['ttfb50']:.3f} vs {b['ttfb50']:.3f} ms")  # fmt: skip
    keep = rps_ratio > MARGIN and latency_ratio > MARGIN
    print(
        f"rule (keep only if > {MARGIN:.2f}x on both): "
        f"{'KEEP the hand-written transport' if keep else f'SWITCH to {best}'}"
    )
