"""Load runners for OpenAI-compatible servers: concurrent streams, latency under load.

Works the same against the gateway and mlx_lm.server, so both are measured by
one client with identical overheads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import StreamResult, async_client, percentile, sample_latency, stream_chat

BodyFactory = Callable[[int, int], dict[str, Any]]  # (stream index, round) -> request body


@dataclass
class LoadResult:
    concurrency: int
    streams: list[StreamResult]
    wall_s: float

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.streams)

    @property
    def tps(self) -> float:
        return self.tokens / self.wall_s

    def describe(self) -> str:
        finishes = ",".join(sorted({s.finish_reason or "?" for s in self.streams}))
        source = "usage" if all(s.usage_reported for s in self.streams) else "chunk count"
        # Time to first text: a stream whose first tokens print nothing reads late.
        ttft = [s.first - s.started for s in self.streams if s.first is not None]
        chunks = sum(s.content_chunks for s in self.streams)
        return (
            f"{self.tokens} tokens in {self.wall_s:.1f}s = {self.tps:.1f} tok/s "
            f"(time to first text p50 {percentile(ttft, 50) * 1e3:.0f} ms; "
            f"{chunks} text chunks; finish {finishes}; tokens from {source})"
        )


async def concurrent_load(
    url: str, concurrency: int, rounds: int, make_body: BodyFactory
) -> LoadResult:
    """`concurrency` workers, each streaming `rounds` requests back to back."""
    async with async_client() as client:

        async def worker(index: int) -> list[StreamResult]:
            return [await stream_chat(client, url, make_body(index, r)) for r in range(rounds)]

        started = time.perf_counter()
        per_worker = await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall = time.perf_counter() - started
    return LoadResult(concurrency, [s for w in per_worker for s in w], wall)


@dataclass
class LatencyResult:
    latencies: list[float]
    streams_ended_early: bool = False

    def ms(self, pct: float) -> float:
        return percentile(self.latencies, pct) * 1000


async def latency_under_load(
    url: str, path: str, streams: int, count: int, interval_s: float, make_body: BodyFactory
) -> LatencyResult:
    """Sample GET `path` once every stream is generating, then cancel the streams."""
    ended = threading.Event()  # read from the sampling thread
    started = 0
    all_started = asyncio.Event()

    def on_first() -> None:
        nonlocal started
        started += 1
        if started == streams:
            all_started.set()

    async with async_client() as client:
        tasks = [
            asyncio.create_task(stream_chat(client, url, make_body(i, 0), on_first))
            for i in range(streams)
        ]
        for task in tasks:
            task.add_done_callback(lambda _: ended.set())
        try:
            waiter = asyncio.create_task(all_started.wait())
            await asyncio.wait([waiter, *tasks], timeout=300, return_when="FIRST_COMPLETED")
            if not all_started.is_set():
                waiter.cancel()
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise RuntimeError("a load stream failed") from task.exception()
                raise RuntimeError("the load streams did not all start generating")
            latencies = await asyncio.to_thread(
                sample_latency,
                url + path,
                count=count,
                interval_s=interval_s,
                time_limit_s=120.0,
                keep_going=lambda: not ended.is_set(),
            )
            early = ended.is_set()
        finally:
            # Disconnecting is how an OpenAI client cancels; servers should stop.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return LatencyResult(latencies, early)
