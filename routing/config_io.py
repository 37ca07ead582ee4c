"""The routing configuration as one YAML document (export_config / import_config).

Import checks the whole document before it writes anything and reports every
problem at once, so a bad file never leaves the routing half-applied and never
takes several edit-and-retry rounds (the checking is routing.config_plan's).
Keys are never in the file: a provider names the environment variable its key
is read from at import.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from typing import Any

from django.db import transaction

from .config_export import export_document  # noqa: F401  (export_config imports it here)
from .config_plan import ImportPlan, _Planner
from .models import LocalModel, MappingTarget, Provider
from .services import set_provider_key

# ---------------------------------------------------------------- import: writing


def _apply(plan: ImportPlan) -> None:
    for row in plan.rows:  # in section order: chains point at local models and providers
        row.save()
    providers = {p.name: p for p in Provider.objects.all()}
    for name, (env, value) in plan.keys.items():
        set_provider_key(providers[name], value, source_env=env)
    local = {m.name: m for m in LocalModel.objects.all()}
    for mapping, links in plan.chains:
        # Replaced as a whole: a chain's order is its meaning, so no per-link merge.
        MappingTarget.objects.filter(mapping=mapping).delete()
        for position, link in enumerate(links):
            kind, name, model, input_price, output_price, group, weight = link
            MappingTarget.objects.create(
                group=group,
                weight=weight,
                mapping=mapping,
                position=position,
                local_model=local[name] if kind == "local" else None,
                provider=providers[name] if kind == "provider" else None,
                upstream_model=model,
                input_price=input_price,
                output_price=output_price,
            )


def import_document(document: Any, environ: MappingABC[str, str], *, dry_run: bool) -> ImportPlan:
    """Validate, then (unless dry_run) write: in one transaction, so both see the same rows."""
    with transaction.atomic():
        plan = _Planner(environ).run(document)
        if not dry_run:
            _apply(plan)
    return plan
