"""Any JSON in any field of either protocol's request, against a live gateway:
the answer is a 2xx or a 4xx in the caller's envelope, never a 5xx, and the
server keeps serving. Bounded for CI: a fixed number of examples, and the few
integers that set how much is generated are kept small."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import LiveServer

pytestmark = pytest.mark.e2e

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
# A field is either left as a valid request has it, or replaced by any JSON.
ANY = st.one_of(st.just(None), JSON)

OPENAI_MESSAGE = {"role": "user", "content": "hi", "name": "n", "tool_call_id": "t"}
OPENAI_PART = {"type": "text", "text": "hi", "image_url": {"url": "https://x/y.png"}}
OPENAI_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
OPENAI_CALL = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
OPENAI = {
    "model": "demo", "max_tokens": 2, "max_completion_tokens": 2, "temperature": 0.5,
    "top_p": 0.9, "stop": ["x"], "seed": 1, "n": 1, "stream": False,
    "stream_options": {"include_usage": True}, "user": "u", "tool_choice": "auto",
    "parallel_tool_calls": True, "metadata": {"a": "b"}, "reasoning_effort": "low",
    "logprobs": False, "top_logprobs": 0, "presence_penalty": 0, "frequency_penalty": 0,
    "logit_bias": {}, "response_format": {"type": "text"},
}  # fmt: skip

ANTHROPIC_BLOCKS = [
    {"type": "text", "text": "hi"},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
    {"type": "tool_use", "id": "t", "name": "f", "input": {}},
    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "r"}]},
    {"type": "thinking", "thinking": "x", "signature": "s"},
]
ANTHROPIC_TOOL = {"name": "f", "description": "d", "input_schema": {"type": "object"}}
ANTHROPIC = {
    "model": "demo", "max_tokens": 2, "system": "be brief", "stop_sequences": ["x"],
    "temperature": 0.5, "top_p": 0.9, "top_k": 5, "stream": False, "metadata": {"user_id": "u"},
    "tool_choice": {"type": "auto"}, "thinking": {"type": "disabled"},
}  # fmt: skip
# How much a request may generate: small whatever was drawn (the property is
# about validation, not about decoding thousands of tokens).
COSTLY = ("max_tokens", "max_completion_tokens")


@st.composite
def mutated(draw: Any, template: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in template.items():
        replacement = draw(ANY)
        if replacement is not None:
            out[key] = replacement
        elif draw(st.booleans()):
            out[key] = value
    return out


@st.composite
def openai_body(draw: Any) -> dict[str, Any]:
    body = draw(mutated(OPENAI))
    message = draw(mutated(OPENAI_MESSAGE))
    if draw(st.booleans()):
        message["content"] = [draw(mutated(OPENAI_PART))]
    if draw(st.booleans()):
        message["role"] = "assistant"
        message["tool_calls"] = [draw(mutated(OPENAI_CALL))]
    body["messages"] = draw(st.one_of(st.just([message]), JSON))
    if draw(st.booleans()):
        body["tools"] = [draw(mutated(OPENAI_TOOL))]
    return body


@st.composite
def anthropic_body(draw: Any) -> dict[str, Any]:
    body = draw(mutated(ANTHROPIC))
    blocks = [
        draw(mutated(b)) for b in draw(st.lists(st.sampled_from(ANTHROPIC_BLOCKS), max_size=3))
    ]
    role = draw(st.one_of(st.sampled_from(["user", "assistant"]), JSON))
    content = draw(st.one_of(st.just(blocks), st.just("hi"), JSON))
    body["messages"] = draw(st.one_of(st.just([{"role": role, "content": content}]), JSON))
    if draw(st.booleans()):
        body["tools"] = [draw(mutated(ANTHROPIC_TOOL))]
    return body


def bounded(body: dict[str, Any]) -> dict[str, Any]:
    for key in COSTLY:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 4:
            body[key] = 4
    return body


def check(server: LiveServer, path: str, body: dict[str, Any], anthropic: bool) -> None:
    body = bounded(body)
    with httpx.stream("POST", server.url + path, json=body, timeout=60) as response:
        text = response.read().decode(errors="replace")
    assert response.status_code < 500, (path, body, text)
    if response.status_code >= 400:
        error = response.json()
        if anthropic:
            assert error["type"] == "error" and error["error"]["type"], error
        else:
            assert error["error"]["message"], error
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples every CI run
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(body=openai_body())
def test_openai_chat_completions_never_5xx(live_gateway: LiveServer, body: dict[str, Any]) -> None:
    check(live_gateway, "/v1/chat/completions", body, anthropic=False)


@PROPERTY
@given(body=anthropic_body())
def test_anthropic_messages_never_5xx(live_gateway: LiveServer, body: dict[str, Any]) -> None:
    check(live_gateway, "/v1/messages", body, anthropic=True)


@PROPERTY
@given(body=anthropic_body())
def test_anthropic_count_tokens_never_5xx(live_gateway: LiveServer, body: dict[str, Any]) -> None:
    check(live_gateway, "/v1/messages/count_tokens", body, anthropic=True)
