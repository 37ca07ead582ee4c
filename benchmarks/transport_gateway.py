"""The gateway as `gateway.edge.server` serves it, with the upstream transport of
the cloud clients chosen by BENCH_UPSTREAM_TRANSPORT (`bench_overhead.py
--transports` only; the gateway itself has one transport):

    BENCH_UPSTREAM_TRANSPORT=aiohttp python -m benchmarks.transport_gateway \
        -b 127.0.0.1 -p 8000 gateway.asgi:application

`httpx`: httpx's own `AsyncHTTPTransport` (httpcore); `aiohttp`: the
`httpx-aiohttp` package's `AiohttpTransport` (`pip install -e '.[bench]'`);
`lean`: the hand-written `inference.cloud.http11` transport, where it exists.
Each gets the gateway's connection limits (`inference.cloud.pool.LIMITS`).
"""

from __future__ import annotations

import os

import daphne.server  # noqa: F401  (installs the asyncio reactor first, as gateway.edge.server)
import httpx

from gateway.edge.server import GuardedCommandLine
from inference.cloud import pool


def transport(name: str) -> httpx.AsyncBaseTransport:
    if name == "httpx":
        return httpx.AsyncHTTPTransport(limits=pool.LIMITS)
    if name == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(limits=pool.LIMITS)
    if name == "lean":
        from inference.cloud.http11 import KeepAliveTransport

        limits = pool.LIMITS
        return KeepAliveTransport(
            max_connections=limits.max_connections or 512,
            max_idle=limits.max_keepalive_connections or 128,
        )
    raise SystemExit(f"BENCH_UPSTREAM_TRANSPORT: unknown transport {name!r}")


if __name__ == "__main__":
    chosen = os.environ.get("BENCH_UPSTREAM_TRANSPORT", "httpx")
    transport(chosen)  # an unknown name stops here, before the server starts
    # The benchmark's one seam: the pool asks this function for each provider's transport.
    pool._transport = lambda: transport(chosen)  # type: ignore[assignment]
    GuardedCommandLine.entrypoint()
