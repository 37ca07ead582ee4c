"""Per-backend circuit breakers on pybreaker, driven from asyncio.

pybreaker's own async support (`call_async`) is built on tornado coroutines.
Here an attempt is split into an admission check before it and an outcome
recorded after it; the outcome goes through pybreaker's `call` with a trivial
function that returns or raises, so its state machine (counting, opening,
half-open, closing) and its storages are used unchanged. State lives in Redis
when REDIS_URL is set, so every gateway process sees the same breakers; the
Redis client is synchronous, so those calls run in a worker thread.

Half-open lets exactly one probe through: a probe token (in memory, or a Redis
key with a TTL) is taken by the first request after the reset timeout, and held
until that request's outcome is recorded (or its time budget ends).

If Redis cannot be reached, each process falls back to breakers of its own
(logged): an outage of the shared state must not take every route down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pybreaker
from django.conf import settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    fail_max: int = 5
    reset_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Admission:
    """An attempt let through; `probe`: it is the half-open breaker's one probe,
    and only its outcome gives the probe token back."""

    probe: bool = False


PASS, PROBE = Admission(), Admission(probe=True)
# After a Redis failure, this process decides alone for a while without asking
# again (each try against an unreachable host costs its connect timeout).
REDIS_RETRY_SECONDS = 5.0


class _RaiseRedisErrors:
    """The logger of pybreaker's Redis storage, which logs a RedisError and goes
    on with defaults (closed, no failures): breakers that could never open. This
    one raises it instead, so the caller knows Redis is down and falls back."""

    def exception(self, *args: Any, **kwargs: Any) -> None:
        raise  # the RedisError being handled where this is called

    def __getattr__(self, name: str) -> Any:
        return getattr(logger, name)


class _Failure(Exception):
    """Stands for the real failure inside pybreaker's bookkeeping."""


def _succeed() -> None:
    return None


def _fail() -> None:
    raise _Failure


class Breakers:
    def __init__(self, redis_url: str | None = None) -> None:
        self._redis: Any = None
        self._local: Breakers | None = None  # used while Redis is unreachable
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(
                redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
            self._local = Breakers()
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._probes: dict[str, float] = {}  # in-memory probe tokens: name -> expiry
        self._lock = threading.Lock()
        self._warned_at = 0.0
        self._redis_down_until = 0.0

    @property
    def shared(self) -> bool:
        return self._redis is not None

    def breaker(self, name: str, config: BreakerSettings) -> pybreaker.CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                storage: pybreaker.CircuitBreakerStorage
                if self._redis is not None:
                    storage = pybreaker.CircuitRedisStorage(
                        pybreaker.STATE_CLOSED, self._redis, namespace=f"gateway:{name}"
                    )
                    storage.logger = _RaiseRedisErrors()
                else:
                    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
                breaker = pybreaker.CircuitBreaker(name=name, state_storage=storage)
                self._breakers[name] = breaker
            # Settings are edited in the admin: follow them without a restart.
            breaker.fail_max = config.fail_max
            breaker.reset_timeout = config.reset_timeout
            return breaker

    async def admit(
        self, name: str, config: BreakerSettings, *, hold: float = 0.0
    ) -> Admission | None:
        """May an attempt go to this backend now? None: skip it, it is open.

        A probe (half-open) keeps its token for `hold` seconds at most (the
        attempt's budget), or the reset timeout if that is longer.
        """
        admission: Admission | None = await self._run("_admit", name, config, hold)
        return admission

    async def record(
        self, name: str, config: BreakerSettings, *, ok: bool | None, probe: bool = False
    ) -> None:
        """The attempt's outcome: healthy, unwell, or None for no verdict. A probe's
        outcome (any) gives its token back."""
        await self._run("_record", name, config, ok, probe)

    def state(self, name: str, config: BreakerSettings | None = None) -> str:
        breaker = self.breaker(name, config or BreakerSettings())
        return breaker.current_state

    def states(self) -> dict[str, str]:
        with self._lock:
            names = list(self._breakers)
        return {name: self._breakers[name].current_state for name in names}

    async def _run(self, method: str, *args: Any) -> Any:
        if self._redis is None:
            return getattr(self, method)(*args)
        assert self._local is not None
        if time.monotonic() < self._redis_down_until:
            return getattr(self._local, method)(*args)
        import redis

        try:
            return await asyncio.to_thread(getattr(self, method), *args)
        except redis.RedisError as exc:
            now = time.monotonic()
            self._redis_down_until = now + REDIS_RETRY_SECONDS
            if now - self._warned_at > 10:
                self._warned_at = now
                logger.warning("breakers: Redis failed (%s); this process decides alone", exc)
            return getattr(self._local, method)(*args)

    def _admit(self, name: str, config: BreakerSettings, hold: float = 0.0) -> Admission | None:
        breaker = self.breaker(name, config)
        state = breaker.current_state
        if state == pybreaker.STATE_CLOSED:
            return PASS
        if state == pybreaker.STATE_OPEN:
            opened = breaker._state_storage.opened_at or datetime.fromtimestamp(0, UTC)
            elapsed = (datetime.now(UTC) - opened).total_seconds()
            # pybreaker's Redis storage keeps whole seconds: without the slack an
            # open breaker could be probed up to a second early.
            if elapsed - (1.0 if self._redis is not None else 0.0) < breaker.reset_timeout:
                return None
        # Half-open, or open long enough: one probe at a time, others skip.
        if not self._take_probe(name, max(breaker.reset_timeout, hold)):
            return None
        if state == pybreaker.STATE_OPEN:
            breaker.half_open()
            logger.info("breaker %s half-open: sending a probe", name)
        return PROBE

    def _record(
        self, name: str, config: BreakerSettings, ok: bool | None, probe: bool = False
    ) -> None:
        breaker = self.breaker(name, config)
        before = breaker.current_state
        if ok is not None:
            with contextlib.suppress(_Failure, pybreaker.CircuitBreakerError):
                breaker.call(_succeed if ok else _fail)
        after = breaker.current_state
        if before != after:
            logger.warning("breaker %s: %s -> %s", name, before, after)
        if probe:  # only the probe's own outcome frees the token, not a late stream's
            self._release_probe(name)

    def _take_probe(self, name: str, ttl: float) -> bool:
        if self._redis is not None:
            return bool(self._redis.set(f"gateway:{name}:probe", 1, nx=True, px=int(ttl * 1000)))
        now = time.monotonic()
        with self._lock:
            if self._probes.get(name, 0) > now:
                return False
            self._probes[name] = now + ttl
            return True

    def _release_probe(self, name: str) -> None:
        if self._redis is not None:
            self._redis.delete(f"gateway:{name}:probe")
        else:
            with self._lock:
                self._probes.pop(name, None)


_box: Breakers | None = None
_box_lock = threading.Lock()


def breakers() -> Breakers:
    global _box
    if _box is None:
        with _box_lock:
            if _box is None:
                _box = Breakers(settings.REDIS_URL or None)
    return _box


def reset_breakers() -> None:
    """Forget every breaker (tests, and after REDIS_URL changes)."""
    global _box
    with _box_lock:
        _box = None
