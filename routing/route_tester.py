"""What the admin's route tester shows: the match, the chain, each target's health."""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.sync import async_to_sync

from . import selectors
from .probes import probe_provider
from .resolution import Hop, Mapping, Route
from .selectors import Snapshot


@dataclass(frozen=True)
class HopReport:
    position: int
    label: str
    kind: str
    model: str
    healthy: bool
    health: str


@dataclass(frozen=True)
class Explanation:
    requested: str
    route: Route | None
    matching: list[Mapping]
    hops: list[HopReport]
    cloud_routing: bool


def explain(requested: str) -> Explanation:
    snapshot = selectors.load_snapshot()  # fresh: the admin just saved something
    table = snapshot.table
    route = table.resolve(requested)
    hops = [_report(i, hop, snapshot) for i, hop in enumerate(route.chain)] if route else []
    return Explanation(requested, route, table.matching(requested), hops, table.cloud_routing)


def _report(position: int, hop: Hop, snapshot: Snapshot) -> HopReport:
    target, model = hop.target, hop.model
    if target.kind == "local":
        local = snapshot.local_models[target.name]
        from .backends import get_engine

        resident = target.name in get_engine().stats().resident_models
        exists = (local.resolved_path / "config.json").is_file()
        health = "resident" if resident else ("ready to load" if exists else "folder missing")
        return HopReport(position, f"local model {target.name}", "local", model, exists, health)
    provider = snapshot.providers[target.name]
    result = async_to_sync(probe_provider)(provider)
    if result.ok:
        health = f"reachable, key accepted ({result.latency_ms:.0f} ms)"
    else:
        health = f"unhealthy: {result.error}" + (
            f" (HTTP {result.status})" if result.status else ""
        )
    return HopReport(position, f"provider {target.name}", provider.kind, model, result.ok, health)
