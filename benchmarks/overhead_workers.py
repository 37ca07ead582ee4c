"""`bench_overhead.py --workers N`: one gateway process against N on one address.

    .venv/bin/python benchmarks/bench_overhead.py --workers 2 [--seconds 5]

The same fake upstream and routing as bench_overhead; the gateway is started as
a user starts it, `manage.py serve --workers 1` and then `--workers N` (N
daphne processes accepting on one socket, gateway.edge.workers), each loaded
with wrk at concurrency 64. Printed: requests/s for each and their ratio, and
the CPU per request of all gateway processes together (the supervisor and its
workers), which must stay within 10 % of one worker's: on a 2-core machine the
load generator and the upstream share the cores, so the requests/s ratio is
reported as measured, not as what more cores would give.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench_overhead import BODY, GATEWAY_ENV, Result, prepare_gateway, start_upstream, wrk
from common import ServerProcess, free_port, gateway_env
from common import progress as say

CONNECTIONS = 64
GOAL_CPU_RATIO = 1.10


def serve(data: Path, workers: int) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "manage.py", "serve", "--workers", str(workers), "--port",
            str(port), "--no-demo", "--no-admin"]  # fmt: skip
    return ServerProcess(
        name=f"serve --workers {workers}",
        argv=argv,
        env=gateway_env(data, **GATEWAY_ENV),
        log_path=data / f"serve-{workers}.log",
        port=port,
    )


def run_workers(args: argparse.Namespace, workdir: Path, servers: list[ServerProcess]) -> None:
    upstream = start_upstream(workdir, servers)
    say("migrating, configuring routing and a client key")
    data, key = prepare_gateway(workdir, upstream.url)
    results: dict[int, Result] = {}
    for count in (1, args.workers):
        server = serve(data, count)
        servers.append(server)
        say(f"serve --workers {count}: starting")
        server.start()
        wrk(server, key, BODY, 1, workdir, CONNECTIONS)  # warm-up: every worker's pools
        say(f"c={CONNECTIONS} non-streaming: wrk {args.seconds:g}s")
        results[count] = r = wrk(server, key, BODY, args.seconds, workdir, CONNECTIONS)
        say(f"  {r['rps']:.0f} req/s, p50 {r['p50_us'] / 1e3:.2f} ms, p99 "
            f"{r['p99_us'] / 1e3:.2f} ms; gateway CPU {r['cores']:.2f} cores, "
            f"{r['cpu_ms']:.3f} ms/request")  # fmt: skip
        server.stop()
        servers.remove(server)
    one, many = results[1], results[args.workers]
    cpu_ratio = many["cpu_ms"] / one["cpu_ms"]
    verdict = "PASS" if cpu_ratio <= GOAL_CPU_RATIO else "MISS"
    print(f"\nload: wrk -t1 -c{CONNECTIONS}, {args.seconds:g} s, non-streaming; the fake "
          "upstream and wrk share this machine's cores with the gateway")  # fmt: skip
    print(f"{'workers':<8} {'req/s':>8} {'CPU ms/request':>15} {'cores used':>11}")
    for count, r in results.items():
        print(f"{count:<8} {r['rps']:>8.0f} {r['cpu_ms']:>15.3f} {r['cores']:>11.2f}")
    print(f"req/s ratio {args.workers} vs 1 worker: {many['rps'] / one['rps']:.2f}x (as measured)")
    print(f"CPU per request ratio: {cpu_ratio:.3f} (goal <= {GOAL_CPU_RATIO:.2f}): {verdict}")
