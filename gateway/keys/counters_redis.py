"""Redis plumbing shared by the per-key counters (gateway.keys.ratelimit and .budgets).

- One `redis.asyncio` client per event loop: its connections belong to the
  loop that opened them (the server's loop, a test's, a script's).
- Writes that must not hold up a response (a finished request's tokens or
  cost) run as tasks on the loop, kept here until they end: the loop holds
  only weak references to tasks, and a clean shutdown awaits them (`aclose`).
- A Redis failure is logged, at most every 10 s, never raised to a caller: a
  counter outage must not take the gateway down with it (callers admit).

State: one `CounterRedis` per counter kind and process; its clients per loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

logger = logging.getLogger(__name__)

FAILURES = (redis.RedisError, OSError)
SOCKET_TIMEOUT = 1.0  # a request waits this long at most for its admission check
WARN_EVERY = 10.0


class CounterRedis:
    def __init__(self, url: str, what: str) -> None:
        self.url = url
        self._what = what  # "rate limits", "budgets": what an outage leaves unenforced
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_at = -WARN_EVERY

    def client(self) -> Any:
        """This event loop's client."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = redis.asyncio.Redis.from_url(self.url, socket_timeout=SOCKET_TIMEOUT)
            self._clients[loop] = client
        return client

    def later(self, write: Callable[[Any], Awaitable[object]]) -> bool:
        """Run `write(client)` in the background on the running loop (a failure is
        logged); False, and nothing done, when no loop runs here."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        task = loop.create_task(self._guarded(write))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _guarded(self, write: Callable[[Any], Awaitable[object]]) -> None:
        try:
            await write(self.client())
        except FAILURES as exc:
            self.outage(exc)

    async def settle(self) -> None:
        """Wait for the background writes started so far."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def outage(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > WARN_EVERY:
            self._warned_at = now
            logger.warning("%s not enforced, Redis failed: %s", self._what, exc)

    async def aclose(self) -> None:
        """Let the writes in flight reach Redis, then close this loop's client (a
        later use opens a new one)."""
        await self.settle()
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
