"""The routing configuration exported as one YAML document (export_config):
every local model, provider (the environment variable of its key, never the
key) and mapping with its chain, in a form import_config reads back unchanged."""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from typing import Any

from django.db import models

from .config_schema import (
    LOCAL_SPEC,
    MAPPING_SPEC,
    PRICE_KEYS,
    PROVIDER_SPEC,
    VERSION,
    Spec,
    _Flow,
)
from .models import BackendMapping, LocalModel, MappingTarget, Provider
from .resolution import Mapping


def _dump(instance: models.Model, spec: Spec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key in spec.items():
        if isinstance(key, MappingABC):
            out[name] = _Flow(_dump(instance, key))
        else:
            value = getattr(instance, key.field)
            out[name] = _Flow(value) if key.type is dict else value
    return out


def _link(target: MappingTarget) -> _Flow:
    kind, name = target.endpoint()
    if kind == "local":
        return _Flow(local=name)
    link = _Flow(provider=name)
    if target.upstream_model:
        link["model"] = target.upstream_model
    for key in PRICE_KEYS:  # only when set: an unpriced target has none
        if getattr(target, key) is not None:
            link[key] = getattr(target, key)
    return link


def _chain(targets: list[MappingTarget]) -> list[_Flow | dict[str, Any]]:
    """The chain's links; a load-balanced group as {name, group: [members]} at
    its first member's place, a member's weight written when it is not 1."""
    out: list[_Flow | dict[str, Any]] = []
    for target in targets:
        if not target.group:
            out.append(_link(target))
        elif not any(isinstance(o, dict) and o.get("name") == target.group for o in out):
            members = [t for t in targets if t.group == target.group]
            group = [_link(t) | ({"weight": t.weight} if t.weight != 1 else {}) for t in members]
            out.append({"name": target.group, "group": [_Flow(m) for m in group]})
    return out


def export_document() -> tuple[dict[str, Any], list[str]]:
    """The document, and warnings about keys an import could not restore."""
    warnings: list[str] = []
    providers = []
    for provider in Provider.objects.select_related("credential").order_by("name"):
        credential = getattr(provider, "credential", None)
        env = (credential.source_env or None) if credential else None
        if credential and env is None:
            warnings.append(
                f"provider {provider.name!r}: its key was set in the admin, so no environment "
                "variable is known (api_key_env: null); set one before importing elsewhere"
            )
        entry = _dump(provider, PROVIDER_SPEC)
        # api_key_env sits next to base_url: the two things that say where to connect.
        providers.append(
            {k: v for k, v in entry.items() if k in ("name", "kind", "base_url")}
            | {"api_key_env": env}
            | {k: v for k, v in entry.items() if k not in ("name", "kind", "base_url")}
        )
    rows = BackendMapping.objects.prefetch_related("targets__local_model", "targets__provider")
    # Resolution order, so a fresh import creates ties in the same id order (rule 4).
    ordered = sorted(rows, key=lambda m: Mapping(m.id, m.pattern, m.priority, ()).sort_key())
    mappings = [
        _dump(m, MAPPING_SPEC) | {"chain": _chain(list(m.targets.all()))} for m in ordered
    ]
    document = {
        "version": VERSION,
        "local_models": [_dump(m, LOCAL_SPEC) for m in LocalModel.objects.order_by("name")],
        "providers": providers,
        "mappings": mappings,
    }
    return document, warnings
