"""Show the routing table, or where one model name goes and why."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.models import BackendMapping, LocalModel, Provider
from routing.resolution import Hop, Mapping, Route, RoutingTable, segments
from routing.selectors import Snapshot, load_snapshot


def _chain(mapping: Mapping) -> str:
    hops = tuple(Hop(t, t.model_for("")) for t in mapping.targets)
    parts = []
    for segment in segments(hops):
        labels = [_weighted(hop.target.label(), hop) for _, hop in segment]
        group = segment[0][1].target.group
        parts.append(f"[{group} {mapping.balance}: {' | '.join(labels)}]" if group else labels[0])
    return " -> ".join(parts) or "(empty: every target disabled)"


def _weighted(text: str, hop: Hop) -> str:
    return f"{text} (weight {hop.target.weight})" if hop.target.weight != 1 else text


class Command(BaseCommand):
    help = (
        "Without MODEL: the routing mode, local models, providers and mappings in resolution "
        "order. With MODEL: the chain that name resolves to, and why. Uses the router's own "
        "resolution (load_snapshot().table)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", nargs="?", metavar="MODEL", help="a requested model name")

    def handle(self, *args: Any, **options: Any) -> None:
        snapshot = load_snapshot()  # fresh, not the process cache: show what is in the database
        self.mode(snapshot.table)
        if options["model"] is None:
            self.overview(snapshot)
        else:
            self.explain(snapshot.table, options["model"])

    def mode(self, table: RoutingTable) -> None:
        if table.cloud_routing:
            self.stdout.write(
                "Cloud routing: ON (the admin's switch, or ENABLE_CLOUD_ROUTING): names go "
                "through the mappings, "
                "then to the local model of that name"
            )
        else:
            self.stdout.write(
                "Cloud routing: OFF (the admin's switch, or ENABLE_CLOUD_ROUTING): each name is "
                "served by the local "
                "model of that name; mappings are ignored"
            )

    def overview(self, snapshot: Snapshot) -> None:
        w = self.stdout.write
        w("\nLocal models (enabled):")
        for name, model in sorted(snapshot.local_models.items()):
            w(f"  {name:<24} {model.resolved_path}{'  [preload]' if model.preload else ''}")
        if not snapshot.local_models:
            w("  (none)")
        w("\nProviders (enabled):")
        for name, provider in sorted(snapshot.providers.items()):
            credential = getattr(provider, "credential", None)
            key = "NO KEY" if credential is None else "key set"
            if credential is not None and credential.key_suffix:
                key = f"key ...{credential.key_suffix}"
            w(f"  {name:<24} {provider.kind:<10} {provider.effective_base_url}  ({key})")
        if not snapshot.providers:
            w("  (none)")
        w("\nMappings in resolution order (priority, then specificity, then age):")
        table = snapshot.table
        for i, mapping in enumerate(table.mappings, 1):
            w(f"  {i:>2}. {mapping.pattern:<24} priority {mapping.priority:<5} {_chain(mapping)}")
        if not table.mappings:
            w("  (none)")
        if not table.cloud_routing and table.mappings:
            w("  (ignored while cloud routing is off)")
        self.disabled()

    def disabled(self) -> None:
        # Not in the snapshot (the router never sees them), but an operator looking for a
        # missing route wants to know they exist.
        groups = {
            "local models": LocalModel.objects.filter(enabled=False).values_list("name", flat=True),
            "providers": Provider.objects.filter(enabled=False).values_list("name", flat=True),
            "mappings": BackendMapping.objects.filter(enabled=False).values_list(
                "pattern", flat=True
            ),
        }
        for what, names in groups.items():
            if names:
                self.stdout.write(f"\nDisabled {what} (ignored): {', '.join(sorted(names))}")

    def explain(self, table: RoutingTable, requested: str) -> None:
        w = self.stdout.write
        route = table.resolve(requested)
        verdicts = table.verdicts(requested)
        w(f"\n{requested!r}:")
        if route is None:
            w("  no route: no enabled mapping routes it and no enabled local model has that name")
        else:
            self.chain(route)
            if route.mapping is None:
                w(f"  why: served by the local model of that name ({route.reason})")
            else:
                winner = route.mapping
                w(f"  why: mapping {winner.pattern!r} (priority {winner.priority}) wins")
        for verdict in verdicts:
            pattern = repr(verdict.mapping.pattern)
            if verdict.outcome == "skipped":
                w(f"    skips {pattern}: {verdict.reason}")
            elif verdict.outcome == "beaten":
                w(f"    beats {pattern}: {verdict.reason}")
            elif verdict.outcome == "ignored":
                w(f"    ignores {pattern}: {verdict.reason}")
        if route is None:
            raise CommandError(f"no route for {requested!r}")

    def chain(self, route: Route) -> None:
        balance = route.mapping.balance if route.mapping else ""
        for i, segment in enumerate(segments(route.chain)):
            role = "primary:" if i == 0 else f"fallback {i}:"
            group = segment[0][1].target.group
            if group:
                # Where its traffic goes: each member by the strategy, then the others.
                self.stdout.write(f"  {role:<12} group {group} ({balance}, shared by):")
                role = ""
            for _, hop in segment:
                where = "local model" if hop.target.kind == "local" else "provider"
                line = _weighted(f"{where} {hop.target.name}, model {hop.model!r}", hop)
                self.stdout.write(f"  {role:<12} {'  ' if group else ''}{line}")
