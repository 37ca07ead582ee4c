"""Per-key request and token limits, per minute: in Redis when REDIS_URL is set, so
every gateway process counts against the same limits, in memory otherwise.

Each counter is a window of WINDOW seconds that starts with its first use (a
key with a TTL in Redis): no wall-clock boundary lets a burst of twice the
limit through, and Retry-After is simply the window's time left.

Requests are counted at admission. Tokens are known only once a request ends:
admission refuses a key whose tokens in the current window already reached its
limit, and the request's tokens are added when it finishes.

If Redis cannot be reached the request is admitted (logged): a limiter outage
must not take the gateway down with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from .counters_redis import FAILURES, SOCKET_TIMEOUT, CounterRedis

WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # "requests" or "tokens"
    limit: int
    retry_after: float


def _names(key_id: int) -> tuple[str, str]:
    return f"gateway:limits:{key_id}:requests", f"gateway:limits:{key_id}:tokens"


class MemoryLimiter:
    """Windows of one process (per key). `clock` (seconds, monotonic) is injectable
    so tests can move past a window without waiting a minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, list[float]] = {}  # name -> [ends_at, count]

    def _window(self, name: str, now: float) -> list[float]:
        window = self._windows.get(name)
        if window is None or window[0] <= now:
            if len(self._windows) > 10_000:  # drop ended windows now and then
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
            window = self._windows[name] = [now + WINDOW, 0]
        return window

    async def admit(
        self, key_id: int, rpm: int | None, tpm: int | None, *, count: bool = True
    ) -> Refusal | None:
        """Refuse a key over a limit; else let the request in (and count it, unless not)."""
        requests, tokens = _names(key_id)
        now = self._clock()
        with self._lock:
            if tpm is not None:
                used = self._windows.get(tokens)
                if used is not None and used[0] > now and used[1] >= tpm:
                    return Refusal("tokens", tpm, used[0] - now)
            if rpm is not None:
                window = self._window(requests, now)
                if window[1] >= rpm:
                    return Refusal("requests", rpm, window[0] - now)
                window[1] += count
        return None

    def charge(self, key_id: int, tokens: int) -> None:
        """Add a finished request's tokens to the key's window."""
        with self._lock:
            self._window(_names(key_id)[1], self._clock())[1] += tokens


# Both checks in one round trip. Tokens first: a refusal for tokens must not
# use up one of the key's requests. ARGV[4] '0': check only, count nothing.
# Returns {0, 0} or {1 requests | 2 tokens, ms left}.
_ADMIT = """
local window = tonumber(ARGV[3])
local tpm = tonumber(ARGV[2])
if tpm >= 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tpm then
  return {2, redis.call('PTTL', KEYS[2])}
end
local rpm = tonumber(ARGV[1])
if rpm >= 0 then
  if tonumber(redis.call('GET', KEYS[1]) or '0') >= rpm then
    return {1, redis.call('PTTL', KEYS[1])}
  end
  if ARGV[4] == '1' and (redis.call('INCR', KEYS[1]) == 1 or redis.call('PTTL', KEYS[1]) < 0) then
    redis.call('PEXPIRE', KEYS[1], window)
  end
end
return {0, 0}
"""

_CHARGE = """
redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class RedisLimiter:
    def __init__(self, url: str) -> None:
        self.redis = CounterRedis(url, "rate limits")
        self._sync: Any = None

    async def admit(
        self, key_id: int, rpm: int | None, tpm: int | None, *, count: bool = True
    ) -> Refusal | None:
        args = [
            -1 if rpm is None else rpm,
            -1 if tpm is None else tpm,
            int(WINDOW * 1000),
            "1" if count else "0",
        ]
        try:
            code, left_ms = await self.redis.client().eval(_ADMIT, 2, *_names(key_id), *args)
        except FAILURES as exc:
            self.redis.outage(exc)
            return None
        if not code:
            return None
        left = max(int(left_ms), 0) / 1000 or WINDOW
        if code == 1:
            return Refusal("requests", rpm or 0, left)
        return Refusal("tokens", tpm or 0, left)

    def charge(self, key_id: int, tokens: int) -> None:
        """Add a finished request's tokens; never waits (it runs in a finish listener)."""
        args = (1, _names(key_id)[1], tokens, int(WINDOW * 1000))
        if not self.redis.later(lambda client: client.eval(_CHARGE, *args)):
            self._charge_sync(args)  # called outside the server's loop (a script, a test)

    def _charge_sync(self, args: tuple[Any, ...]) -> None:
        try:
            if self._sync is None:
                self._sync = redis.Redis.from_url(self.redis.url, socket_timeout=SOCKET_TIMEOUT)
            self._sync.eval(_CHARGE, *args)
        except FAILURES as exc:
            self.redis.outage(exc)

    async def aclose(self) -> None:
        """Let the token charges in flight reach Redis, then close this loop's client."""
        await self.redis.aclose()


_limiter: MemoryLimiter | RedisLimiter | None = None
_limiter_lock = threading.Lock()


def limiter() -> MemoryLimiter | RedisLimiter:
    global _limiter
    if _limiter is None:
        with _limiter_lock:
            if _limiter is None:
                url = settings.REDIS_URL
                _limiter = RedisLimiter(url) if url else MemoryLimiter()
    return _limiter


def reset_limiter() -> None:
    """Forget every window (tests, and after REDIS_URL changes)."""
    global _limiter
    with _limiter_lock:
        _limiter = None


async def aclose() -> None:
    """A clean shutdown: token charges in flight are written, the connections closed."""
    current = _limiter
    if isinstance(current, RedisLimiter):
        await current.aclose()
