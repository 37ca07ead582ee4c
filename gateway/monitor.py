"""What the backends look like right now, for /metrics and the live dashboard.

Read on demand (a scrape, a dashboard tick), never on the request path: it may
query the database (routing snapshot) and Redis (shared breakers), so callers
run it in a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from routing import selectors
from routing.backends import deployments
from routing.breakers import breakers

logger = logging.getLogger(__name__)

# The order is the severity: the gauge and the dashboard show the same numbers.
BREAKER_VALUES = {"closed": 0, "half-open": 1, "open": 2}


@dataclass(frozen=True, slots=True)
class BackendState:
    name: str  # as in Served.attempts: "local:<model>" or the provider's name
    kind: str  # "local" or "provider"
    breaker: str  # "closed", "half-open" or "open"


def backend_states() -> list[BackendState]:
    """Every breaker the routing names (one per deployment: provider + upstream
    model, or local model; and each provider's own) and every breaker this process
    has used, with its state."""
    box = breakers()
    seen = box.states()  # includes backends disabled since they were last used
    found: dict[str, BackendState] = {}
    try:
        snapshot = selectors.snapshot()
    except Exception:  # the database is down: still report the breakers we know
        logger.warning("backend states: routing snapshot unavailable", exc_info=True)
        snapshot = None
    if snapshot is not None:
        for name, (kind, config) in deployments(snapshot).items():
            # With the request path's own settings, so reading never changes a breaker.
            state = seen.get(name) or box.state(name, config)
            found[name] = BackendState(name, _kind(kind), state)
    for name, state in seen.items():
        if name not in found:
            kind = "local" if name.startswith("local:") else "provider"
            found[name] = BackendState(name, kind, state)
    return [found[name] for name in sorted(found)]


def group_states() -> list[dict[str, object]]:
    """Each load-balanced group of the routing and where its traffic goes now:
    per member, its requests in flight (every process, when Redis shares them)
    and this process's EWMA of its time to first token."""
    from routing.backends import breaker_name
    from routing.balance import balancer
    from routing.resolution import Hop, segments

    try:
        snapshot = selectors.snapshot()
    except Exception:  # the database is down: no groups to show this tick
        logger.warning("group states: routing snapshot unavailable", exc_info=True)
        return []
    counts, latency = balancer().inflight, balancer().latency.ewma
    out: list[dict[str, object]] = []
    for mapping in snapshot.table.mappings:
        hops = tuple(Hop(t, t.model_for(mapping.pattern)) for t in mapping.targets)
        for segment in segments(hops):
            if not segment[0][1].target.group:
                continue
            members = []
            for _, hop in segment:
                name = breaker_name(hop)
                seconds = latency.get(name)
                members.append({
                    "deployment": name, "weight": hop.target.weight,
                    "in_flight": counts.count(name),
                    "ttft_ms": None if seconds is None else round(seconds * 1000, 1),
                })  # fmt: skip
            out.append({"mapping": mapping.pattern, "group": segment[0][1].target.group,
                        "balance": mapping.balance, "members": members})  # fmt: skip
    return out


def _kind(kind: str) -> str:
    return "local" if kind == "local" else "provider"
