"""Who served a request and what it took: the attempts of one chain walk.

One `Served` per request. It feeds X-Gateway-* headers (fixed once a response
starts), and the request log, metrics and dashboard (read when the request
ends, so they also see a stream continued by another target mid-answer).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field


@dataclass(slots=True)
class Attempt:
    backend: str  # the provider's name, or "local:<model>"
    model: str  # the model asked upstream
    outcome: str  # "ok", "continued", "skipped (breaker open)", an error code or HTTP status
    elapsed_ms: float


@dataclass(slots=True)
class Served:
    """Who answered, and what it took."""

    backend: str = ""
    model: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    continuations: int = 0  # times another target took over a broken stream
    malformed_events: int = 0  # unparsable upstream stream events skipped
    # The pattern of the mapping that routed the requested name ("": the local
    # model of that name), as this request resolved it: the request log keeps it.
    mapping: str = ""

    @property
    def fallbacks(self) -> int:
        """Changes of target (provider and model, or local model), continuations included."""
        targets = [(a.backend, a.model) for a in self.attempts]
        return sum(1 for before, after in itertools.pairwise(targets) if before != after)

    @property
    def parts(self) -> list[str]:
        """The targets that served a part of the answer, in order (more than one
        when a stream was continued mid-answer)."""
        return [
            f"{a.backend}/{a.model}"
            for a in self.attempts
            if a.outcome in ("ok", "continued") or a.outcome.endswith(" chunks")
        ]

    @property
    def trail(self) -> str:
        """Each try and its outcome, as X-Gateway-Attempts and the request log show it."""
        return ", ".join(f"{a.backend}/{a.model}={a.outcome}" for a in self.attempts)

    def headers(self) -> dict[str, str]:
        return {
            "X-Gateway-Backend": self.backend,
            "X-Gateway-Model": self.model,
            "X-Gateway-Attempts": self.trail,
            "X-Gateway-Fallbacks": str(self.fallbacks),
        }
