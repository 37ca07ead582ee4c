"""The hand-written SSE parser and rate limiter against the libraries that do the same.

    .venv/bin/pip install -e '.[bench]'   # httpx-sse and limits, for the comparison
    .venv/bin/python benchmarks/bench_plumbing.py [--streams 300] [--admits 3000]

Measured in one run, each pair interleaved in rounds (the median kept):

- SSE: a 200-event OpenAI-style chat stream as the network delivers it (one
  chunk per event, then 4 KiB chunks), read from an `httpx.Response` through
  `inference.cloud.sse.SSEParser` (as `inference.cloud.transport.TimedEvents`
  feeds it) and through httpx-sse's `EventSource.aiter_sse()`: events/s.
- Rate limits: one request of a key as `gateway.keys.ratelimit` admits it (tokens
  per minute checked, then the request counted against requests per minute)
  and charges its tokens, against a private redis-server (Debian's
  `redis-server`) and in memory, by `gateway.keys.ratelimit` and by `limits`'
  fixed-window limiter on its async storages (redis-py; memory): µs per request.

Rule (docs/design.md, "Plumbing"): a hand-written piece is kept only if it
beats the library by more than 15 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import progress as say

MARGIN = 1.15
ROUNDS = 5


def sse_body(events: int) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}],
    }
    one = b"data: " + orjson.dumps(chunk) + b"\n\n"
    return one * events + b"data: [DONE]\n\n"


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def response(chunks: list[bytes]) -> httpx.Response:
    headers = {"content-type": "text/event-stream"}
    return httpx.Response(200, headers=headers, stream=Chunks(chunks))


async def parse_ours(chunks: list[bytes]) -> int:
    from inference.cloud.sse import SSEParser

    parser, count = SSEParser(), 0
    async for chunk in response(chunks).aiter_raw():
        count += len(parser.feed(chunk))
    return count + len(parser.close())


async def parse_httpx_sse(chunks: list[bytes]) -> int:
    from httpx_sse import EventSource

    count = 0
    async for _ in EventSource(response(chunks)).aiter_sse():
        count += 1
    return count


async def rate(work: Callable[[], Awaitable[int]], repeat: int) -> float:
    """Events (or requests) per second over `repeat` calls."""
    started, done = time.perf_counter(), 0
    for _ in range(repeat):
        done += await work()
    return done / (time.perf_counter() - started)


async def compare(label: str, pair: dict[str, Callable[[], Awaitable[int]]], repeat: int,
                  unit: str, per_second: bool) -> dict[str, float]:  # fmt: skip
    samples: dict[str, list[float]] = {name: [] for name in pair}
    for _ in range(ROUNDS):
        for name, work in pair.items():
            samples[name].append(await rate(work, repeat))
    figures = {name: statistics.median(values) for name, values in samples.items()}
    if not per_second:  # as time per item
        figures = {name: 1e6 / value for name, value in figures.items()}
    say(label + ": " + ", ".join(f"{name} {value:,.1f} {unit}" for name, value in figures.items()))
    return figures


async def sse(args: argparse.Namespace) -> None:
    body = sse_body(200)
    per_event = [e + b"\n\n" for e in body.split(b"\n\n")[:-1]]
    sized = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    assert await parse_ours(per_event) == await parse_httpx_sse(per_event) == 201
    for shape, chunks in (("one chunk per event", per_event), ("4 KiB chunks", sized)):
        pair = {"ours": lambda c=chunks: parse_ours(c),
                "httpx-sse": lambda c=chunks: parse_httpx_sse(c)}  # fmt: skip
        f = await compare(f"SSE, {shape}", pair, args.streams, "events/s", True)
        verdict(f"SSE parser ({shape})", f["ours"] / f["httpx-sse"], "events/s")


async def limiters(args: argparse.Namespace, url: str) -> None:
    from limits import RateLimitItemPerMinute
    from limits.aio.storage import MemoryStorage, RedisStorage
    from limits.aio.strategies import FixedWindowRateLimiter

    from gateway.keys.ratelimit import MemoryLimiter, RedisLimiter

    rpm, tpm = RateLimitItemPerMinute(10**9), RateLimitItemPerMinute(10**12)
    counter = iter(range(10**9))

    def ours(limiter: MemoryLimiter | RedisLimiter) -> Callable[[], Awaitable[int]]:
        async def one() -> int:
            key = next(counter) % 100
            assert await limiter.admit(key, 10**9, 10**12) is None
            limiter.charge(key, 20)
            return 1

        return one

    def theirs(storage: MemoryStorage | RedisStorage) -> Callable[[], Awaitable[int]]:
        limiter = FixedWindowRateLimiter(storage)

        async def one() -> int:
            key = str(next(counter) % 100)
            if not await limiter.test(tpm, key, "tokens"):  # tokens first, as ours
                raise AssertionError("refused")
            if not await limiter.hit(rpm, key, "requests"):
                raise AssertionError("refused")
            await limiter.hit(tpm, key, "tokens", cost=20)  # the finished request's charge
            return 1

        return one

    redis_limiter = RedisLimiter(url)
    storage = RedisStorage(url.replace("unix://", "async+redis+unix://"), implementation="redispy")
    pair = {"ours": ours(redis_limiter), "limits": theirs(storage)}
    f = await compare("rate limits, Redis", pair, args.admits, "µs/request", False)
    await redis_limiter.aclose()
    verdict("rate limiter (Redis)", f["limits"] / f["ours"], "time per request")
    pair = {"ours": ours(MemoryLimiter()), "limits": theirs(MemoryStorage())}
    f = await compare("rate limits, memory", pair, args.admits, "µs/request", False)
    verdict("rate limiter (memory)", f["limits"] / f["ours"], "time per request")


def verdict(what: str, ratio: float, measure: str) -> None:
    keep = ratio > MARGIN
    print(f"  {what}: hand-written / library {ratio:.2f}x ({measure}, > 1 is ours faster) -> "
          f"{'KEEP the hand-written one' if keep else 'SWITCH to the library'}")  # fmt: skip


def redis_server(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a Unix socket (Debian's redis-server package)."""
    import redis

    socket = f"{directory}/redis.sock"
    argv = ["redis-server", "--port", "0", "--unixsocket", socket, "--save", "",
            "--appendonly", "no", "--dir", directory]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"unix://{socket}"
    for _ in range(200):
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis.from_url(url).ping()
            return process, url
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=300, help="SSE streams per round")
    parser.add_argument("--admits", type=int, default=3000, help="requests per round")
    args = parser.parse_args()
    try:
        import httpx_sse  # noqa: F401
        import limits  # noqa: F401
    except ImportError:
        sys.exit("the comparison needs the libraries: .venv/bin/pip install -e '.[bench]'")
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()
    say(f"{ROUNDS} rounds per pair, the median kept")
    asyncio.run(sse(args))
    with tempfile.TemporaryDirectory(prefix="bench-plumbing-") as directory:
        process, url = redis_server(directory)
        try:
            asyncio.run(limiters(args, url))
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
