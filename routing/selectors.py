"""Reads of the routing configuration (selectors read; services write).

The request path reads a cached `Snapshot` (`routing.stamped`): no database
query per request. A change saved in this process invalidates it at once
(signals); a change saved by another process is seen within
GATEWAY_ROUTING_REFRESH_SECONDS, through the version stamp in `RoutingState`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from .models import BackendMapping, LocalModel, Provider, RoutingState, RoutingSwitch
from .resolution import Mapping, RoutingTable, Target, grouped
from .stamped import StampedCache


@dataclass(frozen=True)
class Snapshot:
    table: RoutingTable
    local_models: dict[str, LocalModel]
    providers: dict[str, Provider]  # enabled ones, credential prefetched

    @property
    def version(self) -> int:
        return self.table.version


def cloud_routing() -> bool:
    """The admin's switch, or ENABLE_CLOUD_ROUTING until the switch is set; never
    on a model server, which serves its own local models only."""
    if settings.GATEWAY_MODEL_SERVER_KEY:
        return False
    chosen = RoutingSwitch.current()
    return bool(settings.ENABLE_CLOUD_ROUTING if chosen is None else chosen)


def load_snapshot() -> Snapshot:
    version = RoutingState.current()
    local = {m.name: m for m in LocalModel.objects.filter(enabled=True)}
    providers = {
        p.name: p for p in Provider.objects.filter(enabled=True).select_related("credential")
    }
    mappings = []
    query = BackendMapping.objects.filter(enabled=True).prefetch_related(
        "targets__local_model", "targets__provider"
    )
    for row in query:
        targets = []
        for t in row.targets.all():
            # Disabled targets drop out of the chain; the admin warns about them.
            group, weight = t.group, t.weight
            if t.local_model is not None and t.local_model.name in local:
                name = t.local_model.name  # priced by the model
                targets.append(Target("local", name, group=group, weight=weight))
            elif t.provider is not None and t.provider.name in providers:
                priced = t.input_price is not None or t.output_price is not None
                prices = (t.input_price or Decimal(0), t.output_price or Decimal(0))
                name, model = t.provider.name, t.upstream_model
                price = prices if priced else None
                targets.append(Target("provider", name, model, price, group, weight))
        chain = grouped(targets)
        mappings.append(Mapping(row.id, row.pattern, row.priority, chain, balance=row.balance))
    table = RoutingTable(
        mappings,
        frozenset(local),
        cloud_routing=cloud_routing(),
        version=version,
    )
    return Snapshot(table, local, providers)


_cache: StampedCache[Snapshot] = StampedCache(
    load_snapshot, RoutingState.current, lambda s: s.version, "GATEWAY_ROUTING_REFRESH_SECONDS"
)
invalidate = _cache.invalidate
snapshot = _cache.get
asnapshot = _cache.aget


def last_snapshot() -> Snapshot | None:
    """The snapshot this process holds, however old, without a query (or None):
    for finish listeners, which run on the event loop after the answer."""
    return _cache.last()


async def enabled_local_models() -> list[LocalModel]:
    return sorted((await asnapshot()).local_models.values(), key=lambda m: m.name)


async def get_enabled_local_model(name: str) -> LocalModel | None:
    return (await asnapshot()).local_models.get(name)
