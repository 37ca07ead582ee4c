"""Routing for tests as a flat spec (model field names, a provider's `key`),
turned into the document `manage.py import_config` reads (conftest.configure_routing)."""

from __future__ import annotations

from typing import Any


def routing_document(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The import_config document for a configure_routing spec, and the environment
    variables holding its providers' keys."""
    from routing.config_schema import LOCAL_SPEC, MAPPING_SPEC, PROVIDER_SPEC, VERSION

    keys: dict[str, str] = {}
    providers = []
    for number, entry in enumerate(spec.get("providers", [])):
        fields = dict(entry)
        key = fields.pop("key", None)
        variable = None  # import_config keeps whatever key the database has
        if key:
            variable = f"TEST_PROVIDER_KEY_{number}"
            keys[variable] = str(key)
        providers.append({**_nested(fields, PROVIDER_SPEC), "api_key_env": variable})
    mappings = [
        {**_nested({k: v for k, v in m.items() if k != "chain"}, MAPPING_SPEC),
         "chain": list(m["chain"])}
        for m in spec.get("mappings", [])
    ]  # fmt: skip
    document = {
        "version": VERSION,
        "local_models": [_nested(m, LOCAL_SPEC) for m in spec.get("local_models", [])],
        "providers": providers,
        "mappings": mappings,
    }
    return document, keys


def _nested(fields: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Model-field values placed where the YAML schema keeps them (`max_retries`
    under `retries:`, `breaker_fail_max` as `breaker: {fail_max}`)."""
    places: dict[str, tuple[str, ...]] = {}
    for name, key in schema.items():
        if isinstance(key, dict):
            places.update({sub.field: (name, inner) for inner, sub in key.items()})
        else:
            places[key.field] = (name,)
    out: dict[str, Any] = {}
    for field_name, value in fields.items():
        if field_name not in places:
            raise ValueError(f"{field_name!r} is not a field the routing YAML carries")
        *parents, leaf = places[field_name]
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out
