"""Load-balanced groups: which member of a group of equivalent targets a request tries first.

A chain position may hold a group (targets with the same `group` name, side by
side in the chain, see `resolution.grouped`). For each request the group's
members are put in the order the mapping's `balance` strategy says, best
first; the walk (`routing.failover`) then tries them in that order, each with
its own breakers and retries, before the chain moves to its next position.

Strategies, all weighted by each member's `weight`:
- least-in-flight (default): the fewest requests in flight per unit of weight.
  Counted per deployment (the breaker's unit: provider + upstream model, or a
  local model) in this process, plus the other processes' counts shared
  through Redis when REDIS_URL is set (`SharedCounts`: each process publishes
  its counts twice a second; a request reads memory only).
- round-robin: smooth weighted round-robin (nginx's), per process per group.
- latency: the lowest EWMA of time to first token (of a non-streamed answer:
  its whole time, the moment its first token reaches the client), per process
  per deployment; a member without a sample yet goes first, and a small share
  of requests explores a random member so a once-slow one is measured again.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from .backends import breaker_name
from .resolution import Hop, Route, segments

logger = logging.getLogger(__name__)

Ordered = list[tuple[int, Hop]]
LATENCY_ALPHA = 0.3  # weight of the newest sample in the EWMA
EXPLORE = 0.05  # share of `latency` picks that try a random member
SHARE_SECONDS = 0.5  # how often a process publishes its in-flight counts
STALE_SECONDS = 5.0  # a process silent this long is gone (crashed): its counts are dropped
_KEY = "gateway:inflight"


class InFlight:
    """Requests in flight per deployment: this process's, plus the others'."""

    def __init__(self) -> None:
        self._mine: dict[str, int] = {}
        self._lock = threading.Lock()  # the share thread reads while the loop writes
        self.others: dict[str, int] = {}  # set by SharedCounts

    def begin(self, deployment: str) -> None:
        with self._lock:
            self._mine[deployment] = self._mine.get(deployment, 0) + 1

    def end(self, deployment: str) -> None:
        with self._lock:
            left = self._mine.get(deployment, 0) - 1
            if left > 0:
                self._mine[deployment] = left
            else:
                self._mine.pop(deployment, None)

    def mine(self) -> dict[str, int]:
        with self._lock:
            return dict(self._mine)

    def count(self, deployment: str) -> int:
        return self._mine.get(deployment, 0) + self.others.get(deployment, 0)


class SharedCounts(threading.Thread):
    """Publishes this process's in-flight counts to Redis and reads the other
    processes' (one pipeline per period): one hash, a field per process with
    its counts and when it wrote them."""

    def __init__(self, counts: InFlight, url: str, period: float = SHARE_SECONDS) -> None:
        super().__init__(name="inflight-share", daemon=True)
        import redis

        self.counts, self.period = counts, period
        self.client = redis.Redis.from_url(url, socket_timeout=1.0)
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.period):
            # Nothing may end the thread: a dead one would leave the last counts
            # of the other processes in place for good.
            try:
                self.share()
            except Exception:
                logger.exception("in-flight counts not shared")
                self.counts.others = {}

    def share(self) -> None:
        import redis

        now = time.time()
        mine = json.dumps({"at": now, "counts": self.counts.mine()})
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(_KEY, self.me, mine)
            pipe.hgetall(_KEY)
            _, every = pipe.execute()
            others, gone = _others(every, self.me, now)
            if gone:
                self.client.hdel(_KEY, *gone)
        except (redis.RedisError, OSError) as exc:
            logger.warning("in-flight counts not shared (Redis): %s", exc)
            self.counts.others = {}
            return
        self.counts.others = others

    def stop(self) -> None:
        """Stop sharing and withdraw this process's counts (a clean exit)."""
        self.stopping.set()
        try:
            self.client.hdel(_KEY, self.me)
        except Exception:  # leaving anyway; the entry goes stale
            logger.debug("could not withdraw in-flight counts", exc_info=True)


def _others(every: dict[bytes, bytes], me: str, now: float) -> tuple[dict[str, int], list[str]]:
    """The other processes' counts summed per deployment, and the entries to drop:
    stale ones (a process gone without a word) and unreadable ones (nothing
    this version wrote: it would fail every period)."""
    others: dict[str, int] = {}
    gone = []
    for key, raw in every.items():
        name = key.decode(errors="replace")
        if name == me:
            continue
        try:
            entry = json.loads(raw)
            fresh = now - float(entry["at"]) <= STALE_SECONDS
            counts = {str(d): int(n) for d, n in entry["counts"].items()} if fresh else {}
        except (ValueError, TypeError, KeyError, AttributeError):
            logger.warning("in-flight counts: dropping an unreadable entry %r", name)
            fresh, counts = False, {}
        if not fresh:
            gone.append(name)
        for deployment, n in counts.items():
            others[deployment] = others.get(deployment, 0) + n
    return others, gone


class Latency:
    """EWMA of time to first token per deployment, in this process."""

    def __init__(self) -> None:
        self.ewma: dict[str, float] = {}

    def record(self, deployment: str, seconds: float) -> None:
        old = self.ewma.get(deployment)
        self.ewma[deployment] = (
            seconds if old is None else old + LATENCY_ALPHA * (seconds - old)
        )


@dataclass
class Balancer:
    """Per process: the in-flight counts, latencies and round-robin turns that
    order each group's members for a request."""

    inflight: InFlight
    latency: Latency
    rng: Callable[[], float] = random.random
    turns: dict[tuple[int, str], int] = field(default_factory=dict)  # (mapping, group) -> next

    def order(self, route: Route) -> Ordered:
        """The chain as this request walks it: each group's members best first."""
        out: Ordered = []
        mapping = route.mapping
        for segment in segments(route.chain):
            if len(segment) == 1 or mapping is None:
                out.extend(segment)
            else:
                out.extend(self._group(mapping.id, mapping.balance, segment))
        return out

    def _group(self, mapping_id: int, strategy: str, members: Ordered) -> Ordered:
        names = [breaker_name(hop) for _, hop in members]
        weights = [max(1, hop.target.weight) for _, hop in members]
        if strategy == "round-robin":
            key = (mapping_id, members[0][1].target.group)
            turn = self.turns.get(key, 0)
            self.turns[key] = turn + 1
            first = _smooth_wrr(tuple(weights))[turn % sum(weights)]
            return members[first:] + members[:first]
        if strategy == "latency":
            if self.rng() < EXPLORE:
                first = int(self.rng() * len(members)) % len(members)
                return [members[first], *members[:first], *members[first + 1 :]]
            ewma = self.latency.ewma

            def by_latency(i: int) -> tuple[int, float]:
                seen = ewma.get(names[i])
                return (0, 0.0) if seen is None else (1, seen / weights[i])

            return [members[i] for i in sorted(range(len(members)), key=by_latency)]
        # least-in-flight; ties go to the members in turn (from a start that moves
        # one member per request), so an idle group spreads evenly, and a member
        # never gets two tied requests in a row while another is as idle.
        load = [(self.inflight.count(n) + 1) / w for n, w in zip(names, weights, strict=True)]
        key = (mapping_id, members[0][1].target.group)
        start = self.turns.get(key, 0) % len(members)
        self.turns[key] = start + 1
        rank = sorted(range(len(members)), key=lambda i: (load[i], (i - start) % len(members)))
        return [members[i] for i in rank]


def smooth_wrr(weights: list[int]) -> list[int]:
    """One cycle of smooth weighted round-robin, computed once per set of weights
    (every request of a round-robin group asks for it)."""
    return list(_smooth_wrr(tuple(weights)))


@functools.lru_cache(maxsize=256)
def _smooth_wrr(weights: tuple[int, ...]) -> tuple[int, ...]:
    """One cycle of smooth weighted round-robin (nginx): indices, each as often
    as its weight, spread out (weights 5,1,1 give 0,0,1,0,2,0,0)."""
    current = [0] * len(weights)
    total = sum(weights)
    out = []
    for _ in range(total):
        current = [c + w for c, w in zip(current, weights, strict=True)]
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        out.append(best)
    return tuple(out)


_balancer: Balancer | None = None
_share: SharedCounts | None = None
_lock = threading.Lock()


def balancer() -> Balancer:
    """This process's balancer; with REDIS_URL its in-flight counts are shared."""
    global _balancer, _share
    if _balancer is None:
        with _lock:
            if _balancer is None:
                counts = InFlight()
                if settings.REDIS_URL:
                    _share = SharedCounts(counts, settings.REDIS_URL)
                    _share.start()
                _balancer = Balancer(counts, Latency())
    return _balancer


def reset() -> None:
    """Forget every count and turn (tests, and after REDIS_URL changes)."""
    global _balancer, _share
    with _lock:
        if _share is not None:
            _share.stop()
        _balancer, _share = None, None
