"""The dashboard's last hour, per backend, as this process saw it.

One bucket per minute and backend, counted per attempt, so a backend that failed
before another answered is charged with its failure: attempts, failures (any
outcome but a success; a request refused before any backend is tried counts
under "(none)" when its status is 5xx or 429), fallbacks away from it, and a
latency histogram of its attempts on fixed bounds. Fixed bounds make the
buckets of several processes add up, so the page merges what each process
sends and reads p95 off the merged histogram (as the upper bound of the bucket
the 95th percentile falls in). State per process, in memory: a restarted
process starts its hour afresh.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from routing.health import skipped, succeeded

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

    def note(self, attempts: list[Any], status: int, latency_ms: float) -> None:
        """A finished request: its attempts (routing's Attempt: backend, outcome,
        elapsed_ms), or none when it was refused before any backend."""
        tried = [a for a in attempts if not skipped(a.outcome)]
        minute = int(self._clock() // 60)
        with self._lock:
            per_backend = self._minutes.setdefault(minute, {})
            if len(self._minutes) > MINUTES + 1:
                for old in sorted(self._minutes)[: len(self._minutes) - MINUTES - 1]:
                    del self._minutes[old]
            if not tried:
                failed = status >= 500 or status == 429
                self._add(per_backend, NO_BACKEND, failed, False, latency_ms)
            for i, attempt in enumerate(tried):
                moved_on = i + 1 < len(tried) and tried[i + 1].backend != attempt.backend
                failed = not succeeded(attempt.outcome)
                self._add(per_backend, attempt.backend, failed, moved_on, attempt.elapsed_ms)

    def clear(self) -> None:
        """Forget every minute (tests: each starts with an empty hour)."""
        with self._lock:
            self._minutes.clear()

    @staticmethod
    def _add(
        per_backend: dict[str, list[int]], backend: str, failed: bool, moved_on: bool, ms: float
    ) -> None:
        counts = per_backend.setdefault(backend, [0] * (_FIELDS + len(LATENCY_BOUNDS_MS) + 1))
        counts[0] += 1
        counts[1] += failed
        counts[2] += moved_on
        counts[_FIELDS + bisect_left(LATENCY_BOUNDS_MS, ms)] += 1

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
