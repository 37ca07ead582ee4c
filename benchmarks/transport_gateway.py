"""The gateway as `gateway.edge.server` serves it, with the upstream transport of
the cloud clients chosen by BENCH_UPSTREAM_TRANSPORT (`bench_overhead.py
--transports` only; the gateway itself has one transport):

    BENCH_UPSTREAM_TRANSPORT=httpx python -m benchmarks.transport_gateway \
        -b 127.0.0.1 -p 8000 gateway.asgi:application

`aiohttp`: the gateway's own, httpx-aiohttp's transport as
inference.cloud.connections sets it up; `httpx`: httpx's own
AsyncHTTPTransport (httpcore) with the same limits. The hand-written HTTP/1.1
transport this replaced is measured by this script as of commit 654ab61
(`lean` there).
"""

from __future__ import annotations

import os

import daphne.server  # noqa: F401  (installs the asyncio reactor first, as gateway.edge.server)
import httpx

from gateway.edge.server import GuardedCommandLine
from inference.cloud import connections, pool


class HttpxTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport with the gateway's connection limits."""

    in_flight = 0  # not counted: the benchmark never retires a provider's client

    def __init__(self, base_url: str) -> None:
        limits = httpx.Limits(
            max_connections=connections.MAX_CONNECTIONS,
            max_keepalive_connections=128,
            keepalive_expiry=connections.KEEPALIVE_EXPIRY,
        )
        super().__init__(limits=limits)


if __name__ == "__main__":
    chosen = os.environ.get("BENCH_UPSTREAM_TRANSPORT", "aiohttp")
    if chosen == "httpx":
        # The benchmark's one seam: the class the pool makes each provider's transport from.
        pool.Transport = HttpxTransport  # type: ignore[misc,assignment]
    elif chosen != "aiohttp":
        raise SystemExit(f"BENCH_UPSTREAM_TRANSPORT: unknown transport {chosen!r}")
    GuardedCommandLine.entrypoint()
