"""Hostile request bodies and heads, as units: strict types, unhashable block
types, model names, the route cache, the Host and Content-Type checks, and the
scrubbing of relayed upstream text."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.edge import checks
from gateway.errors import error_body
from inference import scrub
from inference.cloud.errors import transport_error
from inference.errors import InvalidRequest
from inference.types import MAX_MODEL_NAME
from inference.wire import anthropic as anthropic_wire
from inference.wire import openai as openai_wire
from routing.resolution import Mapping, RoutingTable, Target


def openai(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def anthropic(**extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


@pytest.mark.parametrize("value", ["5", True, 5.5, [5], {"n": 5}])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n", "seed"])
def test_openai_integers_are_strict(field: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        openai_wire.parse_request(openai(**{field: value}))
    assert caught.value.param == field


@pytest.mark.parametrize(
    "extra",
    [{"top_logprobs": "3"}, {"presence_penalty": "1"}, {"logprobs": "yes"}, {"stream": "true"}],
)
def test_openai_extensions_are_typed(extra: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        openai_wire.parse_request(openai(**extra))


@pytest.mark.parametrize("value", ["5", True, 5.0])
def test_anthropic_max_tokens_is_strict(value: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        anthropic_wire.parse_request(anthropic(max_tokens=value))
    assert caught.value.param == "max_tokens"


def test_strict_integers_still_accept_integers() -> None:
    assert openai_wire.parse_request(openai(max_tokens=5, n=1))[0].max_tokens == 5
    assert anthropic_wire.parse_request(anthropic(top_k=3)).max_tokens == 5


@pytest.mark.parametrize(
    "content",
    [
        [{"type": ["text"], "text": "x"}],
        [{"type": {"a": 1}, "text": "x"}],
        [{"type": "image", "source": {"type": ["base64"], "media_type": "x", "data": ""}}],
        [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": {}, "text": "x"}]}],
    ],
)
@pytest.mark.parametrize(
    "parse", [anthropic_wire.parse_request, anthropic_wire.parse_count_request]
)
def test_an_unhashable_block_type_is_a_400(content: list[Any], parse: Any) -> None:
    with pytest.raises(InvalidRequest):
        parse(anthropic(messages=[{"role": "user", "content": content}]))


@pytest.mark.parametrize("name", ["x" * (MAX_MODEL_NAME + 1), "gpt\r\nX-Evil: 1", "a\x00b", ""])
def test_model_names_are_bounded_and_printable(name: str) -> None:
    for parse in (
        lambda: openai_wire.parse_request(openai(model=name)),
        lambda: anthropic_wire.parse_request(anthropic(model=name)),
        lambda: anthropic_wire.parse_count_request(anthropic(model=name)),
    ):
        with pytest.raises(InvalidRequest) as caught:
            parse()
        assert caught.value.param == "model"
        assert len(caught.value.message) < 200  # the name is never echoed back


def test_a_10_mib_model_name_is_refused_without_being_echoed() -> None:
    with pytest.raises(InvalidRequest) as caught:
        openai_wire.parse_request(openai(model="m" * (10 << 20)))
    assert len(caught.value.message) < 200


def test_route_cache_keeps_only_names_that_resolved() -> None:
    mapping = Mapping(1, "gpt-*", 0, (Target("provider", "p"),))
    table = RoutingTable([mapping], frozenset({"demo"}), cloud_routing=True)
    for i in range(100):
        assert table.resolve(f"unknown-{i}") is None
    assert table.resolve("x" * (MAX_MODEL_NAME + 1)) is None
    assert table.resolve("gpt-" + "y" * MAX_MODEL_NAME) is None  # matches, but too long
    assert table.resolve("demo") is not None and table.resolve("gpt-4o") is not None
    assert set(table._cache) == {"demo", "gpt-4o"}


def test_route_cache_is_bounded_for_wildcard_names() -> None:
    table = RoutingTable(
        [Mapping(1, "*", 0, (Target("provider", "p"),))], frozenset(), cloud_routing=True
    )
    for i in range(RoutingTable.CACHE_SIZE + 50):
        table.resolve(f"m{i}")
    assert len(table._cache) == RoutingTable.CACHE_SIZE


def scope(method: str, path: str, **headers: str) -> dict[str, Any]:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": method, "path": path, "headers": raw}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "", "127.0.0.1.evil"])
def test_hosts_outside_allowed_hosts_are_refused(host: str) -> None:
    error = checks.host_refusal(scope("GET", "/metrics", host=host))
    assert error is not None and error.status == 400 and error.code == "host_not_allowed"


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "[::1]:80"])
def test_allowed_hosts_pass(host: str) -> None:
    assert checks.host_refusal(scope("GET", "/health", host=host)) is None


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]
)
def test_v1_posts_must_be_json(content_type: str) -> None:
    headers = {"content_type": content_type} if content_type else {}
    error = checks.content_type_refusal(scope("POST", "/v1/messages", **headers))
    assert error is not None and error.status == 415


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_posts_and_gets_pass(content_type: str) -> None:
    assert (
        checks.content_type_refusal(scope("POST", "/v1/messages", content_type=content_type))
        is None
    )
    assert checks.content_type_refusal(scope("GET", "/v1/models")) is None


def test_an_echoed_key_never_reaches_the_client() -> None:
    scrub.remember("provider-key-without-prefix-1234")
    error = InvalidRequest(
        "Incorrect API key provided: Bearer sk-live-abcdefghijklmnopqrstuvwxyz and "
        "provider-key-without-prefix-1234, x-api-key: sk-ant-api03-secretsecret"
    )
    for protocol in ("openai", "anthropic"):
        text = str(error_body(error, protocol))  # type: ignore[arg-type]
        assert (
            "sk-" not in text and "provider-key-without" not in text and "secretsecret" not in text
        )
        assert "[redacted]" in text


def test_internal_addresses_become_the_provider_name_for_clients() -> None:
    error = transport_error("wall", OSError("cannot connect to 127.0.0.1:9: refused"))
    body = error_body(error, "openai")
    assert "127.0.0.1" not in body["error"]["message"] and "<wall>" in body["error"]["message"]
    for text in ("http://10.1.2.3:8000/v1", "vllm.internal:8443", "[fd00::1]:80"):
        assert scrub.for_client(f"failed: {text}", "wall") == "failed: <wall>"
    assert (
        scrub.for_client("at 12:30, 4096 tokens, model gpt-4o")
        == "at 12:30, 4096 tokens, model gpt-4o"
    )


def test_log_records_are_scrubbed_but_keep_addresses(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.scrub")
    handler = logging.Handler()
    handler.addFilter(scrub.RedactingFilter())
    seen: list[logging.LogRecord] = []
    handler.emit = seen.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        logger.warning("upstream said %s at %s", "Bearer sk-abcdefghijklmnop", "127.0.0.1:9")
        try:
            raise ValueError("key sk-abcdefghijklmnopq rejected")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert seen[0].getMessage() == "upstream said [redacted] at 127.0.0.1:9"
    assert "sk-abc" not in (seen[1].exc_text or "") and "[redacted]" in (seen[1].exc_text or "")
