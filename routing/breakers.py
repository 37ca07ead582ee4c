"""Circuit breakers on pybreaker, driven from asyncio, shared through async Redis.

One breaker per deployment (provider + upstream model, or one local model) and
one per provider, which only connection-level failures open (`Gate`); the unit
of state is the breaker's name, shared by every gateway process when REDIS_URL
is set, else per process.

pybreaker's state machine (counting, opening, half-open, closing) runs
unchanged through its public API: an attempt is split into an admission check
before it and an outcome recorded after it (`CircuitBreaker.call` with a
trivial function that returns or raises). Its storage is
`routing.breaker_storage.SnapshotStorage`, a `CircuitBreakerStorage` of our
own: the state is read from Redis before each decision and pybreaker's changes
written back after it: no thread hop per admission, no private attribute. Two processes
deciding at the same moment may both count a failure or both open the breaker;
neither loses a failure (counts are HINCRBY) nor opens it wrongly.

The clock is injectable (wall seconds: Redis state is shared across hosts), so
tests move time instead of sleeping. `opened_at` is recorded on that clock
(pybreaker passes its own `datetime.now()`, which the storage replaces).

Half-open lets exactly one probe through: a probe token (in memory, or a Redis
key with a TTL) is taken by the first request after the reset timeout, and held
until that request's outcome is recorded (or its time budget ends).

If Redis cannot be reached, each process falls back to breakers of its own
(logged): an outage of the shared state must not take every route down.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import pybreaker
from django.conf import settings
from redis.exceptions import RedisError

from .breaker_storage import PREFIX, Clock, SnapshotStorage

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


class _Failure(Exception):
    """Stands for the real failure inside pybreaker's bookkeeping."""


def _succeed() -> None:
    return None


def _fail() -> None:
    raise _Failure


class Breakers:
    """Every breaker of this process, by name; shared through Redis when given."""

    def __init__(self, redis_url: str | None = None, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._url = redis_url or None
        self._redis: Any = None
        self._local: Breakers | None = None  # used while Redis is unreachable
        if self._url:
            import redis.asyncio

            self._redis = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
            self._local = Breakers(clock=clock)
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._storages: dict[str, SnapshotStorage] = {}
        self._probes: dict[str, float] = {}  # in-memory probe tokens: name -> expiry
        self._lock = threading.Lock()
        self._warned_at = 0.0
        self._redis_down_until = 0.0
        self._reader: Any = None  # a synchronous client, for monitoring reads only

    @property
    def shared(self) -> bool:
        return self._redis is not None

    def breaker(self, name: str, config: BreakerSettings) -> pybreaker.CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                storage = self._storages[name] = SnapshotStorage(name, self._clock)
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
        ttl = max(config.reset_timeout, hold)
        shared = self._shared()
        if shared is None:
            return (self._local or self)._admit_alone(name, config, ttl)
        try:
            breaker = self.breaker(name, config)
            storage = self._storages[name]
            await storage.load(shared)  # the common case (closed): this one round trip
            due = self._due(breaker, storage)
            if due is not PROBE:
                return due
            key = f"{PREFIX}{name}:probe"
            if not await shared.set(key, 1, nx=True, px=max(1, int(ttl * 1000))):
                return None  # another request (any process) is the probe
            self._begin_probe(breaker)
            await storage.flush(shared)
            return PROBE
        except (RedisError, OSError) as exc:
            return self._redis_failed(exc)._admit_alone(name, config, ttl)

    async def record(
        self, name: str, config: BreakerSettings, *, ok: bool | None, probe: bool = False
    ) -> None:
        """The attempt's outcome: healthy, unwell, or None for no verdict. A probe's
        outcome (any) gives its token back."""
        shared = self._shared()
        if shared is None:
            (self._local or self)._record_alone(name, config, ok, probe)
            return
        try:
            self.breaker(name, config)
            storage = self._storages[name]
            if ok is not None:
                await storage.load(shared)
                self._count(name, config, ok)
                await storage.flush(shared)
            if probe:  # only the probe's own outcome frees the token, not a late stream's
                await shared.delete(f"{PREFIX}{name}:probe")
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)._record_alone(name, config, ok, probe)

    def state(self, name: str, config: BreakerSettings | None = None) -> str:
        """The breaker's state now, read synchronously (monitoring: /metrics, admin).
        Never through the request path's snapshot, which a decision may be using."""
        if self._local is not None and time.monotonic() < self._redis_down_until:
            return self._local.state(name, config)
        if self._url:
            try:
                raw = self._sync_reader().hget(PREFIX + name, "state")
            except (RedisError, OSError):
                logger.debug("breakers: Redis unreadable for %s", name, exc_info=True)
                return self._local.state(name, config) if self._local else "closed"
            return raw.decode() if raw else pybreaker.STATE_CLOSED
        breaker = self._breakers.get(name)  # a read never makes one
        return breaker.current_state if breaker is not None else pybreaker.STATE_CLOSED

    def reset(self, name: str, config: BreakerSettings) -> None:
        """Close a breaker by hand (an operator, from the admin): closed, its counts
        and any probe token gone; in Redis when shared, so every process sees it.
        Raises RedisError / OSError when the shared state cannot be reached."""
        if self._url:
            self._sync_reader().delete(PREFIX + name, f"{PREFIX}{name}:probe")
        for box in (self, self._local):
            if box is not None:
                box.breaker(name, config).close()  # pybreaker's own reset
                with box._lock:
                    box._probes.pop(name, None)

    def states(self) -> dict[str, str]:
        """Every breaker this process has used, with its state now."""
        with self._lock:
            names = list(self._breakers)
        return {name: self.state(name) for name in names}

    # -- decisions (synchronous, on the snapshot) ------------------------------------

    def _due(self, breaker: pybreaker.CircuitBreaker, storage: SnapshotStorage) -> Admission | None:
        """PASS (closed), None (open, not long enough), or PROBE: one may probe now."""
        state = breaker.current_state
        if state == pybreaker.STATE_CLOSED:
            return PASS
        opened = storage.opened
        waiting = opened is not None and self._clock() - opened < breaker.reset_timeout
        return None if state == pybreaker.STATE_OPEN and waiting else PROBE

    def _begin_probe(self, breaker: pybreaker.CircuitBreaker) -> None:
        if breaker.current_state == pybreaker.STATE_OPEN:
            breaker.half_open()
            logger.info("breaker %s half-open: sending a probe", breaker.name)

    def _admit_alone(self, name: str, config: BreakerSettings, ttl: float) -> Admission | None:
        breaker = self.breaker(name, config)
        due = self._due(breaker, self._storages[name])
        if due is not PROBE:
            return due
        if not self._take_probe(name, ttl):
            return None
        self._begin_probe(breaker)
        return PROBE

    def _record_alone(
        self, name: str, config: BreakerSettings, ok: bool | None, probe: bool
    ) -> None:
        if ok is not None:
            self._count(name, config, ok)
        if probe:
            with self._lock:
                self._probes.pop(name, None)

    def _count(self, name: str, config: BreakerSettings, ok: bool) -> None:
        breaker = self.breaker(name, config)
        before = breaker.current_state
        if before == pybreaker.STATE_OPEN:
            return  # an open breaker counts nothing more (a late stream's end, say)
        with contextlib.suppress(_Failure, pybreaker.CircuitBreakerError):
            breaker.call(_succeed if ok else _fail)
        after = breaker.current_state
        if before != after:
            logger.warning("breaker %s: %s -> %s", name, before, after)

    def _take_probe(self, name: str, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            if self._probes.get(name, 0) > now:
                return False
            self._probes[name] = now + ttl
            return True

    # -- Redis health ---------------------------------------------------------------

    def _shared(self) -> Any:
        """The async Redis client, or None: no Redis, or it failed a moment ago."""
        if self._redis is None or time.monotonic() < self._redis_down_until:
            return None
        return self._redis

    def _redis_failed(self, exc: Exception) -> Breakers:
        now = time.monotonic()
        self._redis_down_until = now + REDIS_RETRY_SECONDS
        if now - self._warned_at > 10:
            self._warned_at = now
            logger.warning("breakers: Redis failed (%s); this process decides alone", exc)
        assert self._local is not None
        return self._local

    def _sync_reader(self) -> Any:
        if self._reader is None:
            import redis

            if self._url is None:
                raise RuntimeError("breaker state is per process: no Redis to read it from")
            self._reader = redis.Redis.from_url(
                self._url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
        return self._reader


class Gate:
    """The breakers one attempt passes: its deployment's (provider + upstream
    model, or one local model), and for a cloud deployment its provider's, which
    only connection-level failures open (no model of it can be reached then)."""

    def __init__(
        self, box: Breakers, config: BreakerSettings, deployment: str, provider: str | None
    ) -> None:
        self.box, self.config = box, config
        self.names = (deployment,) if provider is None else (provider, deployment)
        self.deployment = deployment
        self._probes: dict[str, bool] = {}

    async def admit(self, hold: float) -> bool:
        """May an attempt go now? False: a breaker on the way is open (or probing)."""
        self._probes = {}
        for name in self.names:
            admission = await self.box.admit(name, self.config, hold=hold)
            if admission is None:
                await self.record(None)  # a probe taken on the way is handed back
                return False
            self._probes[name] = admission.probe
        return True

    async def record(self, ok: bool | None, *, provider_too: bool = False) -> None:
        """The attempt's outcome. A failure counts against the provider as a whole
        only with `provider_too`; a success clears both."""
        probes, self._probes = self._probes, {}
        for name, probe in probes.items():
            verdict = ok if (name == self.deployment or ok is not False or provider_too) else None
            await self.box.record(name, self.config, ok=verdict, probe=probe)


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
