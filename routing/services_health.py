"""Writes to backend health: an operator closing a circuit breaker by hand."""

from __future__ import annotations

from .backends import breaker_settings
from .breakers import breakers
from .resolution import Hop
from .selectors import Snapshot


def reset_breaker(name: str, hop: Hop, snapshot: Snapshot) -> str:
    """Close the breaker (every process sees it when breakers are in Redis); its
    state before, for the audit log."""
    box = breakers()
    config = breaker_settings(hop, snapshot)
    before = box.state(name, config)
    box.reset(name, config)
    return before
