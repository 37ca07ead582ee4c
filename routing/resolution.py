"""Route resolution: requested model name -> ordered chain of targets.

A pure function of a `RoutingTable` snapshot, shared by the router, the admin
route tester and the `routes` command, so they can never disagree.

The rule, in order:
1. Only enabled mappings whose fnmatch pattern matches the name (case-sensitive).
2. The highest `priority` wins.
3. Among equal priorities, the most specific pattern wins: an exact name beats
   any wildcard; then more literal (non-wildcard) characters; then fewer
   wildcards.
4. Still tied: the older mapping (lower id) wins.
With no matching mapping (or with cloud routing off), a local model of exactly
the requested name serves it; otherwise the name is unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import translate
from typing import Literal

from inference.types import MAX_MODEL_NAME

_WILDCARDS = re.compile(r"\*|\?|\[[^\]]*\]")


@dataclass(frozen=True, slots=True)
class Target:
    kind: Literal["local", "provider"]
    name: str  # the local model's or the provider's name
    upstream_model: str = ""  # empty: the requested name
    # USD per million tokens (None: not priced); not part of the target's identity.
    prices: tuple[Decimal, Decimal] | None = field(default=None, compare=False)
    # A load-balanced group's name (empty: a position of its own) and this
    # member's share of it; neither is part of the target's identity either.
    group: str = field(default="", compare=False)
    weight: int = field(default=1, compare=False)

    def model_for(self, requested: str) -> str:
        if self.kind == "local":
            return self.name
        return self.upstream_model or requested

    def label(self) -> str:
        return (
            f"local:{self.name}"
            if self.kind == "local"
            else f"{self.name}:{self.upstream_model or '*'}"
        )


def grouped(targets: list[Target]) -> tuple[Target, ...]:
    """The chain with each group's members side by side, at its first member's
    position: the walk tries a group as one position (routing.balance)."""
    out: list[Target] = []
    for target in targets:
        if target.group:
            if any(t.group == target.group for t in out):
                continue  # placed with its group's first member
            out.extend(t for t in targets if t.group == target.group)
        else:
            out.append(target)
    return tuple(out)


def segments(chain: tuple[Hop, ...]) -> list[list[tuple[int, Hop]]]:
    """The chain's positions: a single target, or a group's members (adjacent,
    see `grouped`), each with its index in the chain."""
    out: list[list[tuple[int, Hop]]] = []
    for index, hop in enumerate(chain):
        group = hop.target.group
        if group and out and out[-1][0][1].target.group == group:
            out[-1].append((index, hop))
        else:
            out.append([(index, hop)])
    return out


@dataclass(frozen=True, slots=True)
class Verdict:
    mapping: Mapping
    outcome: Literal["winner", "skipped", "beaten", "ignored"]
    reason: str


def why_lost(loser: Mapping, winner: Mapping) -> str:
    """Which step of the rule above ranks `loser` below `winner`."""
    if loser.priority != winner.priority:
        return f"lower priority ({loser.priority} < {winner.priority})"
    (l_exact, l_literal, l_fewer), (w_exact, w_literal, w_fewer) = (
        loser.specificity,
        winner.specificity,
    )
    if l_exact != w_exact:
        return "equal priority; a wildcard pattern loses to an exact name"
    if l_literal != w_literal:
        return f"equal priority; fewer literal characters ({l_literal} < {w_literal})"
    if l_fewer != w_fewer:
        return f"equal priority; more wildcards ({-l_fewer} > {-w_fewer})"
    return "same priority and specificity; the older mapping wins"


@dataclass(frozen=True, slots=True)
class Mapping:
    id: int
    pattern: str
    priority: int
    targets: tuple[Target, ...]
    regex: re.Pattern[str] = field(init=False, compare=False, repr=False)  # from `pattern`
    balance: str = "least-in-flight"  # how its groups pick a member (routing.balance)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(translate(self.pattern)))

    @property
    def specificity(self) -> tuple[int, int, int]:
        wildcards = _WILDCARDS.findall(self.pattern)
        literal = len(_WILDCARDS.sub("", self.pattern))
        return (0 if wildcards else 1, literal, -len(wildcards))

    def sort_key(self) -> tuple[int, int, int, int, int]:
        exact, literal, fewer_wildcards = self.specificity
        return (-self.priority, -exact, -literal, -fewer_wildcards, self.id)

    def matches(self, name: str) -> bool:
        return self.regex.match(name) is not None


@dataclass(frozen=True, slots=True)
class Hop:
    """A target with the model name it will be asked for."""

    target: Target
    model: str

    @property
    def label(self) -> str:
        return f"{self.target.kind}:{self.target.name}/{self.model}"


@dataclass(frozen=True, slots=True)
class Route:
    requested: str
    chain: tuple[Hop, ...]
    mapping: Mapping | None  # None: served directly by the local model of that name
    reason: str


class RoutingTable:
    """An immutable snapshot of the routing configuration, with a lookup cache.

    The cache belongs to the snapshot (per process, per routing version) and
    holds only names that resolved: names are client-chosen, and an unknown one
    costs a walk of the mappings, never memory that outlives its request.
    """

    CACHE_SIZE = 4096

    def __init__(
        self,
        mappings: list[Mapping],
        local_models: frozenset[str],
        *,
        cloud_routing: bool,
        version: int = 0,
    ) -> None:
        self.mappings = sorted(mappings, key=Mapping.sort_key)
        self.local_models = local_models
        self.cloud_routing = cloud_routing
        self.version = version
        self._cache: dict[str, Route] = {}

    def resolve(self, requested: str) -> Route | None:
        try:
            return self._cache[requested]
        except KeyError:
            pass
        if len(requested) > MAX_MODEL_NAME:
            return None  # the API refuses these first; other callers get no route
        route = self._resolve(requested)
        if route is None:
            return None
        if len(self._cache) >= self.CACHE_SIZE:
            # A wildcard mapping resolves any matching name: the cache stays
            # bounded, and new names push out the oldest entry, not every entry.
            self._cache.pop(next(iter(self._cache), requested), None)
        self._cache[requested] = route
        return route

    def _resolve(self, requested: str) -> Route | None:
        if self.cloud_routing:
            for mapping in self.mappings:
                if mapping.matches(requested):
                    chain = tuple(Hop(t, t.model_for(requested)) for t in mapping.targets)
                    if chain:
                        return Route(requested, chain, mapping, self._why(mapping, requested))
        if requested in self.local_models:
            why = "local model of that name" + (
                "" if self.cloud_routing else " (cloud routing off)"
            )
            return Route(requested, (Hop(Target("local", requested), requested),), None, why)
        return None

    def _why(self, winner: Mapping, requested: str) -> str:
        # What verdicts() calls "beaten", without building every loser's explanation.
        beaten = [m for m in self.matching(requested) if m.targets and m is not winner]
        why = f"pattern {winner.pattern!r} (priority {winner.priority}) matches"
        if beaten:
            names = ", ".join(repr(m.pattern) for m in beaten)
            why += f"; it outranks {names} by priority, then specificity"
        return why

    def verdicts(self, requested: str) -> list[Verdict]:
        """What became of every matching mapping, best first, and why: the one
        explanation the `routes` command and the admin's route tester both show."""
        matching = self.matching(requested)
        if not self.cloud_routing:
            return [Verdict(m, "ignored", "cloud routing is off") for m in matching]
        winner = next((m for m in matching if m.targets), None)
        out: list[Verdict] = []
        empty = "its chain is empty (every target disabled)"
        for mapping in matching:
            if not mapping.targets:
                out.append(Verdict(mapping, "skipped", empty))
            elif mapping is winner:
                out.append(Verdict(mapping, "winner", "the best match with a target"))
            else:
                assert winner is not None
                out.append(Verdict(mapping, "beaten", why_lost(mapping, winner)))
        return out

    def matching(self, requested: str) -> list[Mapping]:
        """Every mapping that matches, best first (for the routes command)."""
        return [m for m in self.mappings if m.matches(requested)]

    def advertised_models(self) -> list[str]:
        """Model names clients can ask for: local models, exact patterns, named targets."""
        names = set(self.local_models)
        if self.cloud_routing:
            for mapping in self.mappings:
                if not _WILDCARDS.search(mapping.pattern):
                    names.add(mapping.pattern)
                else:
                    names.update(t.model_for("") for t in mapping.targets if t.model_for(""))
        # Only what a request can be routed with: a pattern's target name that no
        # mapping matches, or a mapping left with no enabled target, is not offered.
        return sorted(n for n in names if self.resolve(n) is not None)
