"""A circuit breaker's state for pybreaker, in memory and as a Redis hash
(`SnapshotStorage`, used by routing.breakers).

pybreaker's storage interface is synchronous; the gateway decides on asyncio.
So the state is a snapshot: loaded from Redis (one HGETALL, async) before each
decision, pybreaker reads and changes it in memory, and the changes are
written back after it (one pipeline, async): counts as HINCRBY (no process
loses another's failure), the rest as HSET. Unit of state: one breaker name.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pybreaker

Clock = Callable[[], float]
PREFIX = "gateway:breaker:"  # + the breaker's name: its hash; + ":probe": its probe token
_UNSET = object()


class SnapshotStorage(pybreaker.CircuitBreakerStorage):
    """One breaker's state for pybreaker: in memory, and with Redis a snapshot
    loaded before each decision (`load`) whose changes are written back after
    it (`flush`)."""

    def __init__(self, name: str, clock: Clock) -> None:
        super().__init__(name)
        self._clock = clock
        self._state = pybreaker.STATE_CLOSED
        self._counter = 0
        self._successes = 0
        self._opened: float | None = None  # on the injectable clock
        self._changes: dict[str, Any] = {}  # field -> value to set
        self._added: dict[str, int] = {}  # field -> increment
        self._loaded: dict[str, Any] = {}  # the fields as the last load read them

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = self._changes["state"] = state

    def increment_counter(self) -> None:
        self._counter += 1
        self._add("counter")

    def reset_counter(self) -> None:
        self._counter = self._changes["counter"] = 0
        self._added.pop("counter", None)

    def increment_success_counter(self) -> None:
        self._successes += 1
        self._add("successes")

    def reset_success_counter(self) -> None:
        self._successes = self._changes["successes"] = 0
        self._added.pop("successes", None)

    @property
    def counter(self) -> int:
        return self._counter

    @property
    def success_counter(self) -> int:
        return self._successes

    @property
    def opened_at(self) -> datetime | None:
        return None if self._opened is None else datetime.fromtimestamp(self._opened, UTC)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        # pybreaker passes datetime.now(): the breaker's own clock counts instead.
        self._opened = self._changes["opened_at"] = self._clock()

    @property
    def opened(self) -> float | None:
        return self._opened

    def _add(self, field: str) -> None:
        if field in self._changes:  # reset earlier in this decision: set, not add
            self._changes[field] += 1
        else:
            self._added[field] = self._added.get(field, 0) + 1

    async def load(self, redis: Any) -> None:
        data = await redis.hgetall(PREFIX + self.name)
        self.apply(data)

    def apply(self, data: dict[bytes, bytes]) -> None:
        """A state read from Redis becomes this snapshot (pending changes dropped)."""
        self._changes, self._added = {}, {}
        self._state = (data.get(b"state") or b"closed").decode()
        self._counter = int(data.get(b"counter") or 0)
        self._successes = int(data.get(b"successes") or 0)
        opened = data.get(b"opened_at")
        self._opened = float(opened) if opened else None
        self._loaded = {
            "state": self._state, "counter": self._counter,
            "successes": self._successes, "opened_at": self._opened,
        }  # fmt: skip

    async def flush(self, redis: Any) -> None:
        """Write this decision's changes back. A field set to what was loaded is
        not written: a success on a closed breaker resets counts that are already
        0, and that is most requests (one Redis round trip each, saved)."""
        changes, added = self._changes, self._added
        self._changes, self._added = {}, {}
        changes = {k: v for k, v in changes.items() if self._loaded.get(k, _UNSET) != v}
        if not changes and not added:
            return
        key = PREFIX + self.name
        async with redis.pipeline(transaction=True) as pipe:
            if changes:
                pipe.hset(key, mapping={k: str(v) for k, v in changes.items()})
            for field, amount in added.items():
                pipe.hincrby(key, field, amount)
            await pipe.execute()
