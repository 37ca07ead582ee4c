"""Per-key spending budgets per UTC day and calendar month: in Redis when
REDIS_URL is set (every gateway process sees the same spend), in memory otherwise.

The state is one counter per key and period, in micro-dollars. A counter is
seeded from the database (the usage rollup's cost, which the log writer keeps)
the first time a request of that key is admitted in the period, so a restart
or a Redis flush forgets nothing that was logged. A finished request's cost is
added to a counter that exists; one that does not yet will be seeded from the
database, where the request's row is going. A key whose spend reached a budget
is refused with 429 `budget_exceeded` until the period ends.

If Redis cannot be reached the request is admitted (logged), as with rate limits.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import Sum

from inference.errors import RateLimited

from .counters_redis import FAILURES, CounterRedis

MICRO = Decimal(1_000_000)


def periods(now: datetime) -> dict[str, tuple[str, datetime, date]]:
    """ "day" and "month": (counter suffix, when the period ends, its first day)."""
    today = now.date()
    tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    first = today.replace(day=1)
    next_month = (first + timedelta(days=32)).replace(day=1)
    month_end = datetime.combine(next_month, datetime.min.time(), tzinfo=UTC)
    return {
        "day": (today.isoformat(), tomorrow, today),
        "month": (first.strftime("%Y-%m"), month_end, first),
    }


def logged_spend(key_id: int, since: date) -> int:
    """Micro-dollars a key spent from `since` (UTC) on, as the request log holds it."""
    from gateway.usage.models import UsageDay

    total = UsageDay.objects.filter(key_id=key_id, day__gte=since).aggregate(s=Sum("cost"))["s"]
    return int((total or 0) * MICRO)


class MemorySpend:
    """One process's counters: budgets hold per process without Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[str, int] = {}

    async def get(self, name: str) -> int | None:
        return self._spent.get(name)

    async def seed(self, name: str, micro: int, ttl: float) -> int:
        with self._lock:
            if len(self._spent) > 10_000:
                self._spent.clear()  # counters are re-seeded from the database
            return self._spent.setdefault(name, micro)

    def add(self, name: str, micro: int, ttl: float) -> None:
        with self._lock:
            if name in self._spent:
                self._spent[name] += micro


_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], ARGV[1]) end
return 1
"""


class RedisSpend:
    def __init__(self, url: str) -> None:
        self.redis = CounterRedis(url, "budgets")

    async def get(self, name: str) -> int | None:
        value = await self.redis.client().get(name)
        return None if value is None else int(value)

    async def seed(self, name: str, micro: int, ttl: float) -> int:
        client = self.redis.client()
        await client.set(name, micro, nx=True, px=int(ttl * 1000))
        return int(await client.get(name) or micro)

    def add(self, name: str, micro: int, ttl: float) -> None:
        # Outside the server (a script): the database has it, for the next seed.
        self.redis.later(lambda client: client.eval(_ADD, 1, name, micro))

    async def aclose(self) -> None:
        """Let the cost charges in flight reach Redis, then close this loop's client."""
        await self.redis.aclose()


_store: MemorySpend | RedisSpend | None = None
_store_lock = threading.Lock()


def store() -> MemorySpend | RedisSpend:
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                _store = RedisSpend(settings.REDIS_URL) if settings.REDIS_URL else MemorySpend()
    return _store


def reset() -> None:
    global _store
    with _store_lock:
        _store = None


def _name(key_id: int, suffix: str) -> str:
    return f"gateway:spend:{key_id}:{suffix}"


async def check(
    key_id: int,
    prefix: str,
    budgets: dict[str, Decimal | None],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Refuse (429 budget_exceeded) a key whose spend reached a budget of its period."""
    moment = now()
    # Every period's counter is seeded, budgeted or not: charges go to counters
    # that exist, and a budget set later must find the spend already counted.
    for period, (suffix, ends, first_day) in periods(moment).items():
        budget = budgets.get(period)
        name, ttl = _name(key_id, suffix), (ends - moment).total_seconds() + 3600
        try:
            spent = await store().get(name)
            if spent is None:
                logged = await database_sync_to_async(logged_spend)(key_id, first_day)
                spent = await store().seed(name, logged, ttl)
        except FAILURES as exc:
            current = store()
            if isinstance(current, RedisSpend):  # the one store that can fail
                current.redis.outage(exc)
            return
        if budget is not None and spent >= budget * MICRO:
            left = (ends - moment).total_seconds()
            raise RateLimited(
                f"budget_exceeded: the API key {prefix}… has spent its budget of "
                f"{budget} USD per {period} ({Decimal(spent) / MICRO:.4f} USD). "
                f"It resets in {math.ceil(left)} s.",
                retry_after=left,
                code="budget_exceeded",
            )


def charge(key_id: int, cost: Decimal, now: datetime | None = None) -> None:
    """Add a finished request's cost to the key's counters (that exist)."""
    if cost <= 0:
        return
    moment = now or datetime.now(UTC)
    micro = int(cost * MICRO)
    for suffix, ends, _ in periods(moment).values():
        store().add(_name(key_id, suffix), micro, (ends - moment).total_seconds() + 3600)


async def aclose() -> None:
    """A clean shutdown: cost charges in flight are written, the connections closed."""
    current = _store
    if isinstance(current, RedisSpend):
        await current.aclose()
