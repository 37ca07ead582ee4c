"""The YAML document's shape (keys, types, model fields) and its text form.

Kept apart from `config_io`, which exports and imports: this module only says
what a valid document looks like and how it is read and written as YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import yaml

VERSION = 1
TOP_KEYS = ("version", "local_models", "providers", "mappings")


class Key(NamedTuple):
    field: str  # model field the YAML key maps to
    type: type  # str, bool, int, float, Decimal (prices), or dict (string-to-string headers)
    nullable: bool = False
    required: bool = False


# YAML key -> model field; a nested dict is a YAML sub-mapping (timeouts: {...}).
Spec = Mapping[str, "Key | Mapping[str, Key]"]  # read-only, so a section is a Spec too

LOCAL_SPEC: Spec = {
    "name": Key("name", str, required=True),
    "path": Key("path", str, required=True),
    "enabled": Key("enabled", bool),
    "preload": Key("preload", bool),
    "context_length": Key("context_length", int, nullable=True),
    "default_max_tokens": Key("default_max_tokens", int, nullable=True),
    "default_temperature": Key("default_temperature", float, nullable=True),
    "default_top_p": Key("default_top_p", float, nullable=True),
    # USD per million tokens.
    "prices": {"input": Key("input_price", Decimal), "output": Key("output_price", Decimal)},
    "prefill": Key("accepts_prefill", bool),
    "description": Key("description", str),
}
PROVIDER_SPEC: Spec = {
    "name": Key("name", str, required=True),
    "kind": Key("kind", str, required=True),
    "base_url": Key("base_url", str),
    "extra_headers": Key("extra_headers", dict),
    "timeouts": {
        "connect": Key("connect_timeout", float),
        "first_byte": Key("first_byte_timeout", float),
        "first_token": Key("first_token_timeout", float),
        "stream_idle": Key("stream_idle_timeout", float),
        "total": Key("total_timeout", float),
    },
    "retries": {
        "max_retries": Key("max_retries", int),
        "backoff": Key("retry_backoff", float),
        "retry_after_cap": Key("retry_after_cap", float),
    },
    "breaker": {
        "fail_max": Key("breaker_fail_max", int),
        "reset_timeout": Key("breaker_reset_timeout", float),
    },
    "prefill": Key("accepts_prefill", bool, nullable=True),
    "enabled": Key("enabled", bool),
    "description": Key("description", str),
}
MAPPING_SPEC: Spec = {
    "pattern": Key("pattern", str, required=True),
    "priority": Key("priority", int),
    "balance": Key("balance", str),  # how its load-balanced groups pick a member
    "enabled": Key("enabled", bool),
    "description": Key("description", str),
}
PRICE_KEYS = ("input_price", "output_price")  # USD per million tokens, provider links only
TARGET_KEYS = ("provider", "model", "local", *PRICE_KEYS)
MEMBER_KEYS = (*TARGET_KEYS, "weight")  # a load-balanced group's member
GROUP_KEYS = ("group", "name")  # {name: mac, group: [member, ...]}; name optional
_TYPE_NAMES = {
    str: "a string",
    bool: "true or false",
    int: "an integer",
    float: "a number",
    Decimal: "a number",
    dict: "a mapping of strings to strings",
}

# ("local" | "provider", name, upstream model or "", input price, output price,
#  group name or "", weight)
Link = tuple[str, str, str, Decimal | None, Decimal | None, str, int]


class ConfigError(Exception):
    """The document is invalid; `problems` lists every problem with its location."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------- YAML text


class _Flow(dict[str, Any]):
    """A mapping written on one line (chain links, timeouts): easier to scan."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # indent list items under their key, as people do


_Dumper.add_representer(Decimal, lambda d, data: d.represent_float(float(data)))
_Dumper.add_representer(
    _Flow, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)


class _Loader(yaml.SafeLoader):
    """Rejects duplicate keys, which PyYAML would otherwise resolve silently (last wins)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then overriding a key is how merges are meant to work
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r}", key_node.start_mark,
                )  # fmt: skip
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


HEADER = """\
# LLM gateway routing configuration: python manage.py import_config FILE
# No secrets here: each provider's key is read at import from the environment
# variable named by api_key_env (null: the key already in the database is kept).
"""


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def dump_yaml(document: dict[str, Any]) -> str:
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body
