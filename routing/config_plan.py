"""Import planning for the routing YAML (routing.config_io): reading each entry
into model field values, checking the whole document against itself and the
database, and listing what an import would write (`ImportPlan`), all before
anything is written. Every problem is collected, none raised alone."""

from __future__ import annotations

import math
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import DecimalValidator
from django.db import models

from .config_schema import (
    _TYPE_NAMES,
    GROUP_KEYS,
    LOCAL_SPEC,
    MAPPING_SPEC,
    PRICE_KEYS,
    PROVIDER_SPEC,
    TARGET_KEYS,
    TOP_KEYS,
    VERSION,
    ConfigError,
    Key,
    Link,
    Spec,
)
from .models import BackendMapping, CredentialError, LocalModel, MappingTarget, Provider
from .validators import validate_group

_price_field = MappingTarget._meta.get_field("input_price")
_PRICE_DIGITS = DecimalValidator(_price_field.max_digits, _price_field.decimal_places)

# ---------------------------------------------------------------- import: reading


def _locations(spec: Spec, prefix: str = "") -> dict[str, str]:
    """Model field -> its YAML location, to place full_clean's errors."""
    out: dict[str, str] = {}
    for name, key in spec.items():
        if isinstance(key, MappingABC):
            out |= _locations(key, f"{prefix}{name}.")
        else:
            out[key.field] = f"{prefix}{name}"
    return out


def _check_type(value: Any, key: Key) -> tuple[bool, Any]:
    if value is None:
        return key.nullable, None
    if key.type is bool:
        return isinstance(value, bool), value
    if key.type is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if key.type in (float, Decimal):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        # MinValueValidator lets NaN through (every comparison is False).
        ok = ok and math.isfinite(value)
        return ok, (key.type(str(value)) if key.type is Decimal else float(value)) if ok else value
    if key.type is dict:
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
        return ok, value
    return isinstance(value, str), value


def _read(
    entry: dict[Any, Any],
    spec: Spec,
    model: type[models.Model],
    where: str,
    problems: list[str],
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Model field values; an omitted key takes the model's default (the file is the truth)."""
    values: dict[str, Any] = {}
    for name in entry:
        if name not in spec and name not in extra:
            allowed = ", ".join([*spec, *extra])
            problems.append(f"{where}: unknown key {name!r} (allowed: {allowed})")
    for name, key in spec.items():
        here = f"{where}.{name}"
        if isinstance(key, MappingABC):
            group = entry.get(name, {})
            if isinstance(group, dict):
                values |= _read(group, key, model, here, problems)
            else:
                problems.append(f"{here}: expected a mapping")
        elif name not in entry:
            if key.required:
                problems.append(f"{here}: required")
            else:
                field = model._meta.get_field(key.field)
                assert isinstance(field, models.Field)  # a Spec names concrete fields
                values[key.field] = field.get_default()
        else:
            ok, value = _check_type(entry[name], key)
            if ok:
                values[key.field] = value
            else:
                null = " or null" if key.nullable else ""
                problems.append(f"{here}: expected {_TYPE_NAMES[key.type]}{null}")
    return values


def _full_clean(instance: models.Model, spec: Spec, where: str, problems: list[str]) -> None:
    try:
        instance.full_clean()
    except ValidationError as exc:
        located = _locations(spec)
        for name, messages in exc.message_dict.items():
            place = where if name == NON_FIELD_ERRORS else f"{where}.{located.get(name, name)}"
            problems.extend(f"{place}: {message}" for message in messages)


# ---------------------------------------------------------------- import: planning


@dataclass
class ImportPlan:
    changes: list[str] = field(default_factory=list)  # what the import writes, one per line
    warnings: list[str] = field(default_factory=list)
    rows: list[models.Model] = field(default_factory=list)  # new or changed, in write order
    # provider name -> (environment variable, key); repr=False keeps keys out of tracebacks.
    keys: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    chains: list[tuple[BackendMapping, list[Link]]] = field(default_factory=list)


class _Section(NamedTuple):
    name: str
    model: type[models.Model]
    spec: Spec
    lookup: str  # the natural key an entry is matched on
    label: str
    extra: tuple[str, ...]  # keys that are not model fields


_SECTIONS = (
    _Section("local_models", LocalModel, LOCAL_SPEC, "name", "local model", ()),
    _Section("providers", Provider, PROVIDER_SPEC, "name", "provider", ("api_key_env",)),
    _Section("mappings", BackendMapping, MAPPING_SPEC, "pattern", "mapping", ("chain",)),
)
_TARGET_KIND = {"local_models": "local", "providers": "provider"}
_KIND_LABEL = {"local": "local model", "provider": "provider"}


def _sections(document: Any, problems: list[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {s.name: [] for s in _SECTIONS}
    if not isinstance(document, dict):
        problems.append("document: expected a mapping (version, local_models, ...)")
        return out
    problems.extend(f"document: unknown key {k!r}" for k in document if k not in TOP_KEYS)
    if document.get("version") != VERSION:
        problems.append(f"version: expected {VERSION}, got {document.get('version')!r}")
    for name in out:
        value = document.get(name)
        if isinstance(value, list):
            out[name] = value
        elif value is not None:
            problems.append(f"{name}: expected a list")
    return out


def _link_of(target: MappingTarget) -> Link:
    group = (target.group, target.weight)
    kind, name = target.endpoint()
    if kind == "local":
        return ("local", name, "", None, None, *group)
    prices = (target.input_price, target.output_price)
    return ("provider", name, target.upstream_model, *prices, *group)


def _show(links: list[Link]) -> str:
    def one(kind: str, name: str, model: str, group: str) -> str:
        text = f"local:{name}" if kind == "local" else f"{name}:{model or '*'}"
        return f"{text} [group {group}]" if group else text

    return " -> ".join(one(k, n, m, g) for k, n, m, _, _, g, _ in links)


class _Planner:
    """Checks the document against itself and the database, collecting every problem."""

    def __init__(self, environ: MappingABC[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        self.plan = ImportPlan()
        targets = ("targets__local_model", "targets__provider")
        self.existing: dict[str, dict[str, Any]] = {
            "local_models": {m.name: m for m in LocalModel.objects.all()},
            "providers": {p.name: p for p in Provider.objects.select_related("credential")},
            "mappings": {m.pattern: m for m in BackendMapping.objects.prefetch_related(*targets)},
        }
        # What a chain may name, (kind, name) -> enabled: the database, overridden by the file.
        self.targets: dict[tuple[str, str], bool] = {}
        for section, kind in _TARGET_KIND.items():
            self.targets |= {(kind, n): r.enabled for n, r in self.existing[section].items()}

    def run(self, document: Any) -> ImportPlan:
        entries = _sections(document, self.problems)
        for section in _SECTIONS:
            seen: dict[Any, str] = {}
            for i, raw in enumerate(entries[section.name]):
                self.entry(section, f"{section.name}[{i}]", raw, seen)
        if self.problems:
            raise ConfigError(self.problems)
        return self.plan

    def entry(self, section: _Section, where: str, raw: Any, seen: dict[Any, str]) -> None:
        if not isinstance(raw, dict):
            self.problems.append(f"{where}: expected a mapping")
            return
        values = _read(raw, section.spec, section.model, where, self.problems, section.extra)
        name = values.get(section.lookup)
        if name in seen:
            self.problems.append(f"{where}.{section.lookup}: {name!r} is also at {seen[name]}")
        elif name is not None:
            seen[name] = where
            if section.name in _TARGET_KIND:
                # "enabled" may have failed to read (its problem is listed already).
                self.targets[(_TARGET_KIND[section.name], name)] = values.get("enabled", True)
        instance = None
        # Only with every field read: full_clean on half-read values would add noise.
        if values.keys() == _locations(section.spec).keys():
            instance = self.upsert(section, where, values)
        if section.name == "providers":
            self.key(where, name, raw.get("api_key_env"))
        elif section.name == "mappings":
            mapping = instance if isinstance(instance, BackendMapping) else None
            self.chain(f"{where}.chain", mapping, raw)

    def upsert(self, section: _Section, where: str, values: dict[str, Any]) -> models.Model:
        name = values[section.lookup]
        existing: models.Model | None = self.existing[section.name].get(name)
        created = existing is None
        instance = section.model() if existing is None else existing
        located = _locations(section.spec)
        changed = [located[f] for f, v in values.items() if getattr(instance, f) != v]
        for field_name, value in values.items():
            setattr(instance, field_name, value)
        _full_clean(instance, section.spec, where, self.problems)
        label = f"{section.label} {name!r}"
        if created or changed:
            self.plan.rows.append(instance)
            self.plan.changes.append(
                f"create {label}" if created else f"update {label}: {', '.join(changed)}"
            )
        # Only a warning: a file may well be imported before the model is downloaded.
        if isinstance(instance, LocalModel) and not instance.resolved_path.is_dir():
            self.plan.warnings.append(f"{where}: no folder at {instance.resolved_path} yet")
        return instance

    def key(self, where: str, provider: str | None, env: Any) -> None:
        existing = self.existing["providers"].get(provider) if provider is not None else None
        credential = getattr(existing, "credential", None)
        if env is None:
            if credential is None:  # allowed (set it in the admin later), but worth a word
                self.plan.warnings.append(f"{where}: no api_key_env and no stored key")
            return
        if not isinstance(env, str) or not env.strip() or len(env) > 200:
            self.problems.append(f"{where}.api_key_env: expected a variable name, or null")
            return
        value = self.environ.get(env, "").strip()
        if not value:
            self.problems.append(f"{where}.api_key_env: environment variable {env} is not set")
            return
        try:
            same = (
                credential is not None
                and credential.reveal() == value
                and credential.source_env == env
            )
        except CredentialError:
            same = False  # undecryptable: importing the key repairs it
        if provider is not None and not same:
            self.plan.keys[provider] = (env, value)
            self.plan.changes.append(f"set the API key of provider {provider!r} from ${env}")

    def chain(self, where: str, mapping: BackendMapping | None, raw: dict[str, Any]) -> None:
        items = raw.get("chain")
        if not isinstance(items, list) or not items:
            self.problems.append(f"{where}: expected a list of at least one target (the primary)")
            return
        links: list[Link] = []
        groups = 0
        for j, item in enumerate(items):
            if isinstance(item, dict) and "group" in item:
                groups += 1
                links.extend(self.group(f"{where}[{j}]", item, f"g{groups}", links))
            elif link := self.link(f"{where}[{j}]", item):
                links.append(link)
        targets = [link[:3] for link in links]
        for j, target in enumerate(targets):
            if target in targets[:j]:  # as in the admin: a second try adds only time
                self.problems.append(f"{where}: {_show([links[j]])} is in the chain twice")
        if mapping is None:
            return
        old = [_link_of(t) for t in mapping.targets.all()] if mapping.pk else []
        if links != old:
            self.plan.chains.append((mapping, links))
            label = f"mapping {mapping.pattern!r}"
            self.plan.changes.append(f"set the chain of {label}: {_show(links)}")

    def group(self, where: str, item: dict[str, Any], auto: str, prior: list[Link]) -> list[Link]:
        """A load-balanced group's members, named (its `name`, else g1, g2...)."""
        self.problems.extend(f"{where}: unknown key {k!r}" for k in item if k not in GROUP_KEYS)
        name, members = item.get("name", auto), item["group"]
        try:
            if not isinstance(name, str) or len(name) > 40:
                raise ValidationError("expected a name of at most 40 characters")
            validate_group(name)
        except ValidationError as exc:
            self.problems.append(f"{where}.name: {' '.join(exc.messages)}")
            return []
        if any(link[5] == name for link in prior):
            self.problems.append(f"{where}.name: group {name!r} is already in this chain")
        if not isinstance(members, list) or not members:
            self.problems.append(f"{where}.group: expected a list of at least one target")
            return []
        out = []
        for j, member in enumerate(members):
            here = f"{where}.group[{j}]"
            weight = member.get("weight", 1) if isinstance(member, dict) else 1
            if isinstance(member, dict):
                member = {k: v for k, v in member.items() if k != "weight"}
            if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 100:
                self.problems.append(f"{here}.weight: expected an integer from 1 to 100")
            elif link := self.link(here, member):
                out.append((*link[:5], name, weight))
        return out

    def link(self, where: str, item: Any) -> Link | None:
        if not isinstance(item, dict):
            self.problems.append(f"{where}: expected {{provider: P, model: M}} or {{local: L}}")
            return None
        self.problems.extend(f"{where}: unknown key {k!r}" for k in item if k not in TARGET_KEYS)
        kind = "local" if "local" in item else "provider"
        name, model = item.get(kind), item.get("model") or ""
        input_price, output_price = (self.price(f"{where}.{k}", item.get(k)) for k in PRICE_KEYS)
        if ("local" in item) == ("provider" in item):
            self.problems.append(f"{where}: needs exactly one of 'provider' or 'local'")
        elif kind == "local" and ("model" in item or any(k in item for k in PRICE_KEYS)):
            self.problems.append(
                f"{where}: only provider targets take a model name and prices "
                "(a local target costs its local model's prices)"
            )
        elif not isinstance(name, str) or not isinstance(model, str) or len(model) > 200:
            self.problems.append(f"{where}: expected string names (model: 200 chars at most)")
        elif (kind, name) not in self.targets:
            self.problems.append(f"{where}: unknown {_KIND_LABEL[kind]} {name!r}")
        else:
            if not self.targets[(kind, name)]:
                self.plan.warnings.append(f"{where}: {_KIND_LABEL[kind]} {name!r} is disabled")
            return (kind, name, model, input_price, output_price, "", 1)
        return None

    def price(self, where: str, value: Any) -> Decimal | None:
        price: Decimal | None  # what _check_type reads for a Decimal key
        ok, price = _check_type(value, Key("", Decimal, nullable=True))
        if not ok or (price is not None and price < 0):
            self.problems.append(f"{where}: expected a number, at least 0")
            return None
        if price is not None:
            # The column's own limits, checked here: the database would refuse
            # the row at write time (PostgreSQL: DataError) after other rows.
            try:
                _PRICE_DIGITS(price)
            except ValidationError as exc:
                self.problems.append(f"{where}: {' '.join(exc.messages)}")
                return None
        return price
