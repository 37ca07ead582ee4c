"""What the admin's route tester shows: the match, the chain, each target's health."""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.sync import async_to_sync

from . import selectors
from .local_state import local_state
from .probes import ProbeResult, probe_providers
from .resolution import Hop, Route, Verdict
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
    verdicts: list[Verdict]  # every matching mapping, and what became of it
    hops: list[HopReport]
    cloud_routing: bool


def explain(requested: str) -> Explanation:
    snapshot = selectors.load_snapshot()  # fresh: the admin just saved something
    table = snapshot.table
    route = table.resolve(requested)
    chain = route.chain if route else ()
    # The chain's providers are probed together: one slow upstream costs its own
    # time limit once, not once per hop in a row.
    providers = {h.target.name for h in chain if h.target.kind == "provider"}
    probes = async_to_sync(_probe_all)(snapshot, sorted(providers))
    hops = [_report(i, hop, snapshot, probes) for i, hop in enumerate(chain)]
    return Explanation(requested, route, table.verdicts(requested), hops, table.cloud_routing)


async def _probe_all(snapshot: Snapshot, names: list[str]) -> dict[str, ProbeResult]:
    results = await probe_providers([snapshot.providers[n] for n in names])
    return dict(zip(names, results, strict=True))


def _report(
    position: int, hop: Hop, snapshot: Snapshot, probes: dict[str, ProbeResult]
) -> HopReport:
    target, model = hop.target, hop.model
    if target.kind == "local":
        state = local_state(snapshot.local_models[target.name])
        name = f"local model {target.name}"
        return HopReport(position, name, "local", model, state.usable, state.label)
    provider = snapshot.providers[target.name]
    result = probes[target.name]
    if result.ok:
        health = f"reachable, key accepted ({result.latency_ms:.0f} ms)"
    else:
        health = f"unhealthy: {result.error}" + (
            f" (HTTP {result.status})" if result.status else ""
        )
    return HopReport(position, f"provider {target.name}", provider.kind, model, result.ok, health)
