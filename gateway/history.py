"""The dashboard's last hour, per backend, as this process saw it.

One bucket per minute and backend: requests, errors (status >= 500, or 429 from
the gateway: what an operator must look at), fallbacks, and a latency histogram
on fixed bounds. Fixed bounds make the buckets of several processes add up, so
the page merges what each process sends and reads p95 off the merged histogram
(as the upper bound of the bucket the 95th percentile falls in). State per
process, in memory: a restarted process starts its hour afresh.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

MINUTES = 60
# Upper bounds in ms; the last bucket is everything slower.
LATENCY_BOUNDS_MS = (50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000)
NO_BACKEND = "(none)"  # refused before any backend was tried
_FIELDS = 3  # requests, errors, fallbacks; then the histogram


class History:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # minute (epoch // 60) -> backend -> [requests, errors, fallbacks, *histogram]
        self._minutes: dict[int, dict[str, list[int]]] = {}

    def note(self, backend: str, status: int, fallbacks: int, latency_ms: float) -> None:
        minute = int(self._clock() // 60)
        with self._lock:
            per_backend = self._minutes.setdefault(minute, {})
            if len(self._minutes) > MINUTES + 1:
                for old in sorted(self._minutes)[: len(self._minutes) - MINUTES - 1]:
                    del self._minutes[old]
            counts = per_backend.setdefault(
                backend or NO_BACKEND, [0] * (_FIELDS + len(LATENCY_BOUNDS_MS) + 1)
            )
            counts[0] += 1
            counts[1] += status >= 500 or status == 429
            counts[2] += fallbacks
            counts[_FIELDS + bisect_left(LATENCY_BOUNDS_MS, latency_ms)] += 1

    def export(self) -> dict[str, Any]:
        """The last MINUTES minutes, oldest first: what the page merges and draws."""
        last = int(self._clock() // 60)
        first = last - MINUTES + 1
        with self._lock:
            kept = {m: {b: list(c) for b, c in v.items()} for m, v in self._minutes.items()
                    if m >= first}  # fmt: skip
        backends = sorted({b for per in kept.values() for b in per})
        width = _FIELDS + len(LATENCY_BOUNDS_MS) + 1
        series = {
            backend: [kept.get(m, {}).get(backend, [0] * width) for m in range(first, last + 1)]
            for backend in backends
        }
        return {"first_minute": first, "bounds_ms": LATENCY_BOUNDS_MS, "series": series}


history = History()
