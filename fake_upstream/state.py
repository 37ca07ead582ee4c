"""What the fake remembers: recorded requests, attempt counters and fail rules.

Shared between the server's event loop and test code on other threads, so every
access goes through one lock; it is uncontended on the hot path and cheap.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from .faults import FailRule, Fault


@dataclass(slots=True)
class RecordedRequest:
    """One API request as the fake received it (control requests are not recorded)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-case
    json: Any  # the parsed body; None when absent or not JSON
    body: bytes
    model: str | None
    stream: bool
    protocol: str | None  # "openai" or "anthropic"
    connection: int  # same number: same TCP connection (keep-alive)
    received_at: float  # time.time()
    monotonic: float  # time.monotonic(), for measuring retry back-off

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "json": self.json,
            "model": self.model,
            "stream": self.stream,
            "protocol": self.protocol,
            "connection": self.connection,
            "received_at": self.received_at,
            "monotonic": self.monotonic,
        }


class State:
    def __init__(self, *, record: bool = True, max_recorded: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._record = record
        self._records: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._counts: dict[tuple[str | None, str], int] = {}
        self._attempts: dict[str, int] = {}
        self._first_seen: dict[str, float] = {}
        self._rules: list[FailRule] = []
        # A per-process prefix keeps ids unique across fakes while staying cheap to mint.
        self._prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)
        self._connections = itertools.count(1)
        self.abandoned = 0  # answers the client stopped reading (it went away mid-answer)

    def next_id(self) -> str:
        return f"{self._prefix}{next(self._ids):012x}"

    def next_connection(self) -> int:
        return next(self._connections)

    def record(self, req: RecordedRequest) -> int:
        """Store ``req``; returns its attempt number for its model (1 for the first)."""
        key = (req.model, req.path)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            attempt = 0
            if req.model is not None:
                attempt = self._attempts.get(req.model, 0) + 1
                self._attempts[req.model] = attempt
            if self._record:
                self._records.append(req)
        return attempt

    def first_seen(self, model: str) -> float:
        """When a request for ``model`` first came (monotonic), since the last reset."""
        with self._lock:
            return self._first_seen.setdefault(model, time.monotonic())

    def count(self, model: str | None = None, path: str | None = None) -> int:
        with self._lock:
            return sum(
                n
                for (m, p), n in self._counts.items()
                if (model is None or m == model) and (path is None or p == path)
            )

    def requests(self, model: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self._records
                if (model is None or r.model == model) and (path is None or r.path == path)
            ]

    def add_rule(self, rule: FailRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def rules(self) -> list[dict[str, object]]:
        with self._lock:
            return [rule.describe() for rule in self._rules]

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def take_rule(self, model: str) -> Fault | None:
        """The fault of the first live rule matching ``model``, consuming one use of it."""
        if not self._rules:  # unlocked peek: the common case has no rules at all
            return None
        with self._lock:
            for rule in self._rules:
                if rule.take(model):
                    fault = rule.fault
                    self._rules = [r for r in self._rules if r.remaining != 0]
                    return fault
        return None

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
            self._counts.clear()
            self._attempts.clear()
            self._first_seen.clear()
            self._rules.clear()
            self.abandoned = 0

    def now(self) -> tuple[float, float]:
        return time.time(), time.monotonic()
