"""What the admin's route tester shows: the match, the chain, and per target one
health truth: its breakers (as the request path sees them), what its recent
attempts did (every process, from the log), and a live probe."""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.sync import async_to_sync

from . import selectors
from .backends import breaker_name, breaker_settings
from .balance import balancer
from .breakers import breakers
from .health import Recent, ever_contacted, recent_attempts
from .local_state import local_state
from .probes import ProbeResult, probe_providers
from .resolution import Hop, Route, Verdict, segments
from .selectors import Snapshot

FAILING_RATE = 0.5  # recent attempts failing this often: traffic is moving elsewhere


@dataclass(frozen=True)
class HopReport:
    position: int  # index in the chain
    role: str  # "primary", "fallback 2", "primary, group g (least-in-flight)"
    label: str
    kind: str
    model: str
    healthy: bool
    health: str  # the verdict, in words
    breakers: list[tuple[str, str]]  # (breaker, state): the deployment's, the provider's
    recent: Recent | None  # None: no attempt in the window
    never_contacted: bool
    probe: str  # the live check: a local model's state, or a provider's model listing


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
    recent = recent_attempts() if chain else {}
    roles = chain_roles(route) if route else []
    hops = [
        _report(i, hop, roles[i], snapshot, probes, recent) for i, hop in enumerate(chain)
    ]
    return Explanation(requested, route, table.verdicts(requested), hops, table.cloud_routing)


async def _probe_all(snapshot: Snapshot, names: list[str]) -> dict[str, ProbeResult]:
    results = await probe_providers([snapshot.providers[n] for n in names])
    return dict(zip(names, results, strict=True))


def hop_breakers(hop: Hop, snapshot: Snapshot) -> list[tuple[str, str]]:
    """The deployment's breaker and, for a provider, the provider's own (when it
    is another one): read only, through the breakers' public state()."""
    config = breaker_settings(hop, snapshot)
    names = [breaker_name(hop)]
    if hop.target.kind == "provider" and hop.target.name not in names:
        names.append(hop.target.name)
    box = breakers()
    return [(name, box.state(name, config)) for name in names]


def chain_roles(route: Route) -> list[str]:
    """Each target's place: its position (a group counts as one) and, in a group,
    the group, the strategy, its weight and its requests in flight now."""
    roles: list[str] = []
    balance = route.mapping.balance if route.mapping else ""
    counts = balancer().inflight
    for i, segment in enumerate(segments(route.chain)):
        place = "primary" if i == 0 else f"fallback {i}"
        for _, hop in segment:
            group = hop.target.group
            if not group:
                roles.append(place)
                continue
            busy = counts.count(breaker_name(hop))
            roles.append(
                f"{place}, group {group} ({balance}, weight {hop.target.weight}, "
                f"{busy} in flight)"
            )
    return roles


def _report(
    position: int,
    hop: Hop,
    role: str,
    snapshot: Snapshot,
    probes: dict[str, ProbeResult],
    recent_by: dict[str, Recent],
) -> HopReport:
    target, model = hop.target, hop.model
    deployment = f"{breaker_prefix(hop)}/{model}"
    recent = recent_by.get(deployment)
    never = recent is None and not ever_contacted(deployment)
    states = hop_breakers(hop, snapshot)
    if target.kind == "local":
        state = local_state(snapshot.local_models[target.name])
        label, probe_ok, probe = f"local model {target.name}", state.usable, state.label
    else:
        result = probes[target.name]
        label, probe_ok = f"provider {target.name}", result.ok
        status = f" (HTTP {result.status})" if result.status else ""
        probe = (
            f"models listed, key accepted ({result.latency_ms:.0f} ms)"
            if result.ok
            else f"probe failed: {result.error}{status}"
        )
    healthy, health = verdict(states, recent, never, probe_ok)
    kind = "local" if target.kind == "local" else snapshot.providers[target.name].kind
    return HopReport(
        position, role, label, kind, model, healthy, health, states, recent, never, probe
    )


def breaker_prefix(hop: Hop) -> str:
    """How attempt trails name the hop's backend: "local:<model>" or the provider."""
    return f"local:{hop.target.name}" if hop.target.kind == "local" else hop.target.name


def verdict(
    states: list[tuple[str, str]], recent: Recent | None, never: bool, probe_ok: bool
) -> tuple[bool, str]:
    """One answer to "will requests use it?", the breakers first: an open one is
    skipped by every request, whatever a probe says."""
    opened = [name for name, state in states if state == "open"]
    if opened:
        return False, f"breaker open ({', '.join(opened)}): requests skip it"
    if any(state == "half-open" for _, state in states):
        return False, "breaker half-open: one probe request decides"
    if recent is not None and recent.error_rate is not None and recent.error_rate >= FAILING_RATE:
        return False, f"failing: {recent.failures} of its last {recent.tried} attempts failed"
    if not probe_ok:
        return False, "not reachable now (see the probe)"
    if never:
        return True, "never contacted: no request has tried it yet"
    return True, "healthy"
