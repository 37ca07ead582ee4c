"""The Anthropic protocol end to end: official SDK and raw HTTP against live daphne."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam

from fake_upstream import FakeUpstream

from .conftest import LiveServer, routed_gateway

pytestmark = pytest.mark.e2e

HELLO: list[MessageParam] = [{"role": "user", "content": "Tell me a story about a lighthouse."}]
HEADERS = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
# The SDK no longer has sampling parameters in its signature; the API still takes them.
GREEDY = {"extra_body": {"temperature": 0}}


@pytest.fixture(scope="module")
def client(live_gateway: LiveServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live_gateway.url, api_key="x", max_retries=0)


def text_of(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def prompt_of(usage: Any) -> int:
    """The whole prompt: Anthropic counts what the prompt cache read (or wrote)
    apart from `input_tokens`, and the local engine reuses earlier prompts."""
    if isinstance(usage, dict):
        return int(sum(usage.get(k) or 0 for k in PROMPT_FIELDS))
    return int(sum(getattr(usage, k) or 0 for k in PROMPT_FIELDS))


PROMPT_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def test_non_streaming_message(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="demo", max_tokens=16, **GREEDY, messages=HELLO, metadata={"user_id": "t"}
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "demo"
    assert message.content and message.content[0].type == "text"
    assert text_of(message)
    assert message.stop_reason in {"end_turn", "max_tokens"}
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 5
    assert 1 <= message.usage.output_tokens <= 16


def test_stream_helper_matches_non_streaming(client: anthropic.Anthropic) -> None:
    whole = client.messages.create(model="demo", max_tokens=20, **GREEDY, messages=HELLO)
    with client.messages.stream(model="demo", max_tokens=20, **GREEDY, messages=HELLO) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text_of(whole) == text_of(final)
    assert final.stop_reason == whole.stop_reason
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_raw_stream_event_sequence(client: anthropic.Anthropic, live_gateway: LiveServer) -> None:
    events = list(
        client.messages.create(model="demo", max_tokens=12, **GREEDY, messages=HELLO, stream=True)
    )
    kinds = [e.type for e in events]  # the SDK swallows pings
    deltas = kinds[2:-3]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert deltas and set(deltas) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[0].message.content == []  # type: ignore[union-attr]

    # On the wire: the exact sequence, ping included, each `event:` naming its data.
    body = {"model": "demo", "max_tokens": 12, "temperature": 0, "messages": HELLO, "stream": True}
    with httpx.stream(
        "POST", f"{live_gateway.url}/v1/messages", json=body, headers=HEADERS, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    frames = [f.split("\n") for f in raw.strip().split("\n\n")]
    names = [f[0].removeprefix("event: ") for f in frames]
    payloads = [json.loads(f[1].removeprefix("data: ")) for f in frames]
    assert [p["type"] for p in payloads] == names
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    usage = payloads[-2]["usage"]
    assert prompt_of(usage) > 5 and 1 <= usage["output_tokens"] <= 12


def test_stop_sequences(client: anthropic.Anthropic) -> None:
    def create(**kw: object) -> anthropic.types.Message:
        return client.messages.create(model="demo", max_tokens=40, **GREEDY, messages=HELLO, **kw)

    base = text_of(create())
    assert len(base) > 12
    stop = base[8:12]
    cut = create(stop_sequences=[stop, "\u2603"])
    assert text_of(cut) == base[: base.index(stop)]
    assert cut.stop_reason == "stop_sequence"
    assert cut.stop_sequence == stop
    with client.messages.stream(
        model="demo", max_tokens=40, **GREEDY, messages=HELLO, stop_sequences=[stop]
    ) as stream:
        assert "".join(stream.text_stream) == base[: base.index(stop)]
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)


def test_system_as_string_and_as_blocks(client: anthropic.Anthropic) -> None:
    def usage(**kw: object) -> int:
        message = client.messages.create(model="demo", max_tokens=4, **GREEDY, messages=HELLO, **kw)
        assert text_of(message) or message.stop_reason == "max_tokens"
        return prompt_of(message.usage)

    plain = usage()
    as_string = usage(system="You are a lighthouse keeper who answers in verse.")
    as_blocks = usage(
        system=[
            {"type": "text", "text": "You are a lighthouse keeper."},
            {"type": "text", "text": "You answer in verse."},
        ]
    )
    assert as_string > plain and as_blocks > plain
    counted = client.messages.count_tokens(
        model="demo",
        messages=HELLO,  # type: ignore[arg-type]
        system=[
            {"type": "text", "text": "You are a lighthouse keeper."},
            {"type": "text", "text": "You answer in verse."},
        ],
    )
    assert counted.input_tokens == as_blocks  # both system blocks reached the prompt


def test_count_tokens_is_exact_for_local_models(
    client: anthropic.Anthropic, live_gateway: LiveServer
) -> None:
    conversation: list[MessageParam] = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}],
        },
    ]
    tools = [
        {
            "name": "weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    for kw in ({"messages": HELLO}, {"messages": conversation, "tools": tools, "system": "Hi"}):
        counted = client.messages.count_tokens(model="demo", **kw)  # type: ignore[arg-type]
        used = client.messages.create(model="demo", max_tokens=2, **kw)  # type: ignore[arg-type]
        assert counted.input_tokens == prompt_of(used.usage)
    without_tools = client.messages.count_tokens(model="demo", messages=conversation)
    assert counted.input_tokens > without_tools.input_tokens
    response = httpx.post(
        f"{live_gateway.url}/v1/messages/count_tokens",
        json={"model": "demo", "messages": HELLO, "max_tokens": 5},
        headers=HEADERS,
    )
    assert response.status_code == 200
    assert response.headers["X-Gateway-Count"] == "exact"
    assert set(response.json()) == {"input_tokens"}


def test_models_in_anthropic_format(client: anthropic.Anthropic, live_gateway: LiveServer) -> None:
    models = client.models.list()
    assert "demo" in [m.id for m in models.data]
    demo = client.models.retrieve("demo")
    assert (demo.id, demo.type, demo.display_name) == ("demo", "model", "demo")
    assert demo.created_at.year >= 2024
    with pytest.raises(anthropic.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]

    page = httpx.get(f"{live_gateway.url}/v1/models?limit=1", headers=HEADERS).json()
    assert set(page) == {"data", "has_more", "first_id", "last_id"}
    assert page["first_id"] == page["last_id"] == page["data"][0]["id"]
    # Without the header, the same path answers in OpenAI's format.
    openai_style = httpx.get(f"{live_gateway.url}/v1/models").json()
    assert openai_style["object"] == "list"
    assert openai_style["data"][0]["object"] == "model"


def test_either_key_header_is_accepted(live_gateway: LiveServer) -> None:
    body = {"model": "demo", "max_tokens": 2, "messages": HELLO}
    for auth in ({"x-api-key": "k"}, {"authorization": "Bearer k"}, {}):
        response = httpx.post(
            f"{live_gateway.url}/v1/messages", json=body, headers={**HEADERS, **auth}, timeout=60
        )
        assert response.status_code == 200, response.text


async def test_async_client(live_gateway: LiveServer) -> None:
    client = anthropic.AsyncAnthropic(base_url=live_gateway.url, api_key="x", max_retries=0)
    async with client:
        results = await asyncio.gather(
            *[
                client.messages.create(model="demo", max_tokens=12, **GREEDY, messages=HELLO)
                for _ in range(3)
            ]
        )
        texts = {text_of(r) for r in results}
        assert len(texts) == 1  # batched greedy requests agree with each other
        async with client.messages.stream(
            model="demo", max_tokens=12, **GREEDY, messages=HELLO
        ) as stream:
            streamed = "".join([t async for t in stream.text_stream])
        assert streamed == texts.pop()
        counted = await client.messages.count_tokens(model="demo", messages=HELLO)
        assert counted.input_tokens == prompt_of(results[0].usage)


def test_sdk_raises_typed_errors(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="ghost", max_tokens=5, messages=HELLO)
    assert missing.value.status_code == 404
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(
            model="demo", max_tokens=5, messages=HELLO, extra_body={"temperature": 1.5}
        )
    assert "temperature" in bad.value.body["error"]["message"]  # type: ignore[index]


USER = b'"messages": [{"role": "user", "content": "x"}]'


@pytest.mark.parametrize(
    ("path", "body", "status", "kind", "fragment"),
    [
        ("/v1/messages", b"{not json", 400, "invalid_request_error", "JSON"),
        ("/v1/messages", b"[1, 2]", 400, "invalid_request_error", "JSON object"),
        ("/v1/messages", b'{"model": "demo", ' + USER + b"}", 400, "invalid_request_error",
         "max_tokens"),
        ("/v1/messages", b'{"model": "demo", "max_tokens": 0, ' + USER + b"}", 400,
         "invalid_request_error", "max_tokens"),
        ("/v1/messages", b'{"model": "demo", "max_tokens": 5, "messages": '
         b'[{"role": "wizard", "content": "x"}]}', 400, "invalid_request_error", "messages.0.role"),
        ("/v1/messages", b'{"model": "demo", "max_tokens": 5, "temperature": 1.5, ' + USER + b"}",
         400, "invalid_request_error", "temperature"),
        ("/v1/messages", b'{"model": "demo", "max_tokens": 5, "messages": [{"role": "user", '
         b'"content": [{"type": "audio"}]}]}', 400, "invalid_request_error",
         "messages.0.content.0"),
        ("/v1/messages", b'{"model": "demo", "max_tokens": 5, "thinking": {"type": "adaptive"}, '
         + USER + b"}", 400, "invalid_request_error", "thinking"),
        ("/v1/messages", b'{"model": "demo", "max_tokens": 5, "context_management": {}, '
         + USER + b"}", 400, "invalid_request_error", "context_management"),
        ("/v1/messages", b'{"model": "ghost", "max_tokens": 5, ' + USER + b"}", 404,
         "not_found_error", "ghost"),
        ("/v1/messages/count_tokens", b'{"model": "ghost", ' + USER + b"}", 404,
         "not_found_error", "ghost"),
        ("/v1/messages/count_tokens", b'{"model": "demo"}', 400, "invalid_request_error",
         "messages"),
        ("/v1/messages/nothing-here", b"{}", 404, "not_found_error", "no route"),
    ],
)  # fmt: skip
def test_errors_use_anthropic_envelope(
    live_gateway: LiveServer, path: str, body: bytes, status: int, kind: str, fragment: str
) -> None:
    response = httpx.post(f"{live_gateway.url}{path}", content=body, headers=HEADERS, timeout=60)
    assert_envelope(response, status, kind)
    assert fragment in response.json()["error"]["message"]
    assert_still_serving(live_gateway)


def assert_envelope(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    data = response.json()
    assert set(data) == {"type", "error"} and data["type"] == "error"
    assert set(data["error"]) == {"type", "message"}
    assert data["error"]["type"] == kind and data["error"]["message"]


def assert_still_serving(server: LiveServer) -> None:
    body = {"model": "demo", "max_tokens": 2, "messages": HELLO}
    response = httpx.post(f"{server.url}/v1/messages", json=body, headers=HEADERS, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"


def test_oversized_body_is_413(live_gateway: LiveServer) -> None:
    big = b'{"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": "'
    big += b"a" * (33 << 20) + b'"}]}'
    response = httpx.post(f"{live_gateway.url}/v1/messages", content=big, headers=HEADERS)
    assert_envelope(response, 413, "request_too_large")
    assert_still_serving(live_gateway)


def test_wrong_method(live_gateway: LiveServer) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = httpx.get(f"{live_gateway.url}{path}", headers=HEADERS)
        assert_envelope(response, 405, "invalid_request_error")
        assert "POST" in response.headers["Allow"]
    assert_still_serving(live_gateway)


def test_context_length_exceeded(live_gateway: LiveServer) -> None:
    words = " ".join(f"word{i}" for i in range(6000))
    body = {"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": words}]}
    response = httpx.post(f"{live_gateway.url}/v1/messages", json=body, headers=HEADERS, timeout=60)
    assert_envelope(response, 400, "invalid_request_error")
    assert "context" in response.json()["error"]["message"]
    # Counting is how a client learns how far over the limit it is: it still answers.
    counted = httpx.post(
        f"{live_gateway.url}/v1/messages/count_tokens", json=body, headers=HEADERS, timeout=60
    )
    assert counted.status_code == 200, counted.text
    assert counted.json()["input_tokens"] > 4096
    assert_still_serving(live_gateway)


# ------------------------------------------------ routed to cloud providers (fake upstream)

OAI_KEY, ANT_KEY = "sk-test-oai", "sk-ant-test-ant"
UPSTREAM_KEYS = (OAI_KEY, ANT_KEY)  # the fake upstream takes these (conftest.upstream)
PROVIDER = {
    "connect_timeout": 1.0, "first_byte_timeout": 2.0, "stream_idle_timeout": 2.0,
    "total_timeout": 8.0, "max_retries": 0, "retry_backoff": 0.05, "retry_after_cap": 1.0,
    "breaker_fail_max": 1000, "breaker_reset_timeout": 1.0,
}  # fmt: skip
ROUTES = {
    "via-anthropic": ("ant", "claude-ok"),
    "via-openai": ("oai", "gpt-ok"),
    "overloaded": ("ant", "fault-529"),
    "limited": ("ant", "fault-429"),
    "late-overloaded": ("ant", "fault-stream-overloaded:2"),
    "no-stop": ("ant", "fault-no-done"),
}
WEATHER = {
    "name": "weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def routed(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[LiveServer]:
    spec = {
        "providers": [
            {**PROVIDER, "name": "oai", "kind": "openai", "base_url": f"{upstream.url}/v1",
             "key": OAI_KEY},
            {**PROVIDER, "name": "ant", "kind": "anthropic", "base_url": upstream.url,
             "key": ANT_KEY},
        ],
        "mappings": [
            {"pattern": name, "chain": [{"provider": p, "model": m}]}
            for name, (p, m) in ROUTES.items()
        ],
    }  # fmt: skip
    with routed_gateway(tmp_path_factory.mktemp("anthropic-routed"), spec) as server:
        yield server


@pytest.fixture
def routed_client(routed: LiveServer, upstream: FakeUpstream) -> anthropic.Anthropic:
    upstream.reset()
    return anthropic.Anthropic(base_url=routed.url, api_key="x", max_retries=0, timeout=30)


@pytest.mark.parametrize("model", ["via-anthropic", "via-openai"])
def test_routed_text_streamed_and_whole(
    routed_client: anthropic.Anthropic, upstream: FakeUpstream, model: str
) -> None:
    kw = {"model": model, "max_tokens": 30, "messages": HELLO, "system": "Be brief."}
    whole = routed_client.messages.create(**kw, stop_sequences=["\u2603"])  # type: ignore[arg-type]
    assert text_of(whole).startswith("echo: Tell me a story")
    assert whole.model == ROUTES[model][1]
    assert whole.stop_reason in {"end_turn", "max_tokens"}
    assert whole.usage.input_tokens > 5 and whole.usage.output_tokens > 0
    with routed_client.messages.stream(**kw) as stream:  # type: ignore[arg-type]
        assert "".join(stream.text_stream) == text_of(whole)
        final = stream.get_final_message()
    assert final.stop_reason == whole.stop_reason
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        whole.usage.input_tokens,
        whole.usage.output_tokens,
    )
    sent = upstream.find(model=ROUTES[model][1])[0].json
    if model == "via-anthropic":  # same protocol: the body as the client sent it
        assert (sent["system"], sent["messages"]) == ("Be brief.", HELLO)
        assert sent["stop_sequences"] == ["\u2603"]
    else:
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent["stop"] == ["\u2603"]


@pytest.mark.parametrize("model", ["via-anthropic", "via-openai"])
def test_routed_tool_use(routed_client: anthropic.Anthropic, model: str) -> None:
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    kw = {"model": model, "max_tokens": 64, "tools": [WEATHER]}
    whole = routed_client.messages.create(messages=ask, **kw)  # type: ignore[arg-type]
    assert whole.stop_reason == "tool_use"
    calls = [b for b in whole.content if b.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "weather"
    assert isinstance(calls[0].input, dict) and "city" in calls[0].input
    with routed_client.messages.stream(messages=ask, **kw) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert [(b.name, b.input) for b in streamed] == [(calls[0].name, calls[0].input)]
    assert final.stop_reason == "tool_use"
    # The result goes back as a tool_result block; the answer is text again.
    follow = [
        *ask,
        {"role": "assistant", "content": [c.model_dump() for c in whole.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": calls[0].id, "content": "Sunny, 21C"}]},
    ]  # fmt: skip
    answer = routed_client.messages.create(messages=follow, **kw)  # type: ignore[arg-type]
    assert answer.stop_reason in {"end_turn", "max_tokens"}
    assert "Sunny" in text_of(answer)


def test_routed_count_tokens(routed_client: anthropic.Anthropic, routed: LiveServer) -> None:
    kw = {"messages": HELLO, "system": "Be brief."}
    used = routed_client.messages.create(model="via-anthropic", max_tokens=5, **kw)  # type: ignore[arg-type]
    counted = routed_client.messages.count_tokens(model="via-anthropic", **kw)  # type: ignore[arg-type]
    assert counted.input_tokens == used.usage.input_tokens  # the provider's own count
    body = {"model": "via-openai", "tools": [WEATHER], **kw}
    response = httpx.post(f"{routed.url}/v1/messages/count_tokens", json=body, headers=HEADERS)
    assert response.status_code == 200 and response.headers["X-Gateway-Count"] == "estimate"
    tool = {"name": "weather", "description": WEATHER["description"],
            "input_schema": WEATHER["input_schema"]}  # fmt: skip
    chars = len("Be brief.") + len(HELLO[0]["content"])
    chars += len(json.dumps(tool, separators=(",", ":")))
    assert response.json() == {"input_tokens": math.ceil(chars / 4)}


@pytest.mark.parametrize(
    ("model", "status", "kind"),
    [("overloaded", 529, "overloaded_error"), ("limited", 429, "rate_limit_error")],
)
def test_routed_errors_keep_anthropic_types(
    routed: LiveServer, upstream: FakeUpstream, model: str, status: int, kind: str
) -> None:
    upstream.reset()
    body = {"model": model, "max_tokens": 5, "messages": HELLO}
    for stream in (False, True):
        response = httpx.post(
            f"{routed.url}/v1/messages",
            json={**body, "stream": stream},
            headers=HEADERS,
            timeout=30,
        )
        assert_envelope(response, status, kind)


def test_error_after_content_is_sent_in_band(
    routed_client: anthropic.Anthropic, routed: LiveServer
) -> None:
    body = {"model": "late-overloaded", "max_tokens": 30, "messages": HELLO, "stream": True}
    with httpx.stream(
        "POST", f"{routed.url}/v1/messages", json=body, headers=HEADERS, timeout=30
    ) as response:
        assert response.status_code == 200
        raw = response.read().decode()
    frames = [f.split("\n") for f in raw.strip().split("\n\n")]
    names = [f[0].removeprefix("event: ") for f in frames]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert "content_block_delta" in names
    assert names[-1] == "error" and "message_stop" not in names
    error = json.loads(frames[-1][1].removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
    assert [n for n in names if n == "error"] == ["error"]  # said once, not twice
    # The SDK raises on the in-band error rather than ending the stream cleanly.
    kw = {k: v for k, v in body.items() if k != "stream"}
    with (
        pytest.raises(anthropic.APIStatusError),
        routed_client.messages.stream(**kw) as stream,  # type: ignore[arg-type]
    ):
        "".join(stream.text_stream)


def test_relayed_stream_without_message_stop_still_ends(routed: LiveServer) -> None:
    body = {"model": "no-stop", "max_tokens": 10, "messages": HELLO, "stream": True}
    with httpx.stream(
        "POST", f"{routed.url}/v1/messages", json=body, headers=HEADERS, timeout=30
    ) as response:
        assert response.status_code == 200
        raw = response.read().decode()
    names = [f.split("\n")[0].removeprefix("event: ") for f in raw.strip().split("\n\n")]
    assert names[-2:] == ["message_delta", "message_stop"]


CLOCK = {
    "name": "clock",
    "description": "Time in a zone",
    "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}},
}
ALL_TOOLS = [{"role": "user", "content": "use all tools for Paris"}]


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_use_against_an_openai_upstream(
    routed_client: anthropic.Anthropic, upstream: FakeUpstream, stream: bool
) -> None:
    kw = {"model": "via-openai", "max_tokens": 64, "tools": [WEATHER, CLOCK]}
    if stream:
        with routed_client.messages.stream(messages=ALL_TOOLS, **kw) as events:  # type: ignore[arg-type]
            message = events.get_final_message()
    else:
        message = routed_client.messages.create(messages=ALL_TOOLS, **kw)  # type: ignore[arg-type]
    assert message.stop_reason == "tool_use"
    calls = [b for b in message.content if b.type == "tool_use"]
    assert [c.name for c in calls] == ["weather", "clock"]
    assert "city" in calls[0].input and "zone" in calls[1].input
    sent = upstream.find(model="gpt-ok")[-1].json
    assert [t["function"]["name"] for t in sent["tools"]] == ["weather", "clock"]
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]

    follow = [
        *ALL_TOOLS,
        {"role": "assistant", "content": [c.model_dump() for c in message.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": calls[0].id, "content": "Sunny"},
            {"type": "tool_result", "tool_use_id": calls[1].id, "is_error": True,
             "content": [{"type": "text", "text": "no such zone"}]},
        ]},
    ]  # fmt: skip
    answer = routed_client.messages.create(messages=follow, **kw)  # type: ignore[arg-type]
    assert answer.stop_reason in {"end_turn", "max_tokens"}
    turns = upstream.find(model="gpt-ok")[-1].json["messages"]
    assert [c["id"] for c in turns[1]["tool_calls"]] == [calls[0].id, calls[1].id]
    assert turns[2:] == [
        {"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "Error: no such zone"},
    ]


def test_images_from_an_anthropic_client(
    routed_client: anthropic.Anthropic, upstream: FakeUpstream, live_gateway: LiveServer
) -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        {"type": "image", "source": {"type": "url", "url": "https://images.example.invalid/a.png"}},
        {"type": "text", "text": "Which is bigger?"},
    ]
    ask = [{"role": "user", "content": content}]
    routed_client.messages.create(model="via-anthropic", max_tokens=5, messages=ask)  # type: ignore[arg-type]
    assert upstream.find(model="claude-ok")[-1].json["messages"] == ask  # untouched
    routed_client.messages.create(model="via-openai", max_tokens=5, messages=ask)  # type: ignore[arg-type]
    parts = upstream.find(model="gpt-ok")[-1].json["messages"][0]["content"]
    assert parts == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "image_url", "image_url": {"url": "https://images.example.invalid/a.png"}},
        {"type": "text", "text": "Which is bigger?"},
    ]
    local = anthropic.Anthropic(base_url=live_gateway.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="text-only local model"):
        local.messages.create(model="demo", max_tokens=5, messages=ask)  # type: ignore[arg-type]


def test_thinking_reaches_every_kind_of_backend(
    routed_client: anthropic.Anthropic, upstream: FakeUpstream, live_gateway: LiveServer
) -> None:
    kw = {"max_tokens": 4096, "messages": HELLO,
          "thinking": {"type": "enabled", "budget_tokens": 2048}}  # fmt: skip
    routed_client.messages.create(model="via-anthropic", **kw)  # type: ignore[arg-type]
    assert upstream.find(model="claude-ok")[-1].json["thinking"] == kw["thinking"]
    routed_client.messages.create(model="via-openai", **kw)  # type: ignore[arg-type]
    assert upstream.find(model="gpt-ok")[-1].json["reasoning_effort"] == "low"
    # A local model's template gets enable_thinking; one without the switch ignores it.
    local = anthropic.Anthropic(base_url=live_gateway.url, api_key="x", max_retries=0)
    reply = local.messages.create(model="demo", **{**kw, "max_tokens": 5})  # type: ignore[arg-type]
    assert reply.stop_reason == "max_tokens"


def test_what_only_anthropic_can_run_is_passed_on_or_refused(
    routed_client: anthropic.Anthropic, routed: LiveServer, upstream: FakeUpstream
) -> None:
    """Server tools, documents and beta flags: an Anthropic upstream gets them as
    they are; an OpenAI one cannot run them, and the client is told so."""
    body = {
        "max_tokens": 20,
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                            "data": "The sky is green."}},
            {"type": "text", "text": "What colour is the sky?"}]}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
    }  # fmt: skip
    beta = {**HEADERS, "anthropic-beta": "context-management-2025-06-27"}
    url = f"{routed.url}/v1/messages"
    ok = httpx.post(url, json={**body, "model": "via-anthropic"}, headers=beta, timeout=30)
    assert ok.status_code == 200, ok.text
    seen = upstream.find(model="claude-ok")[-1]
    assert seen.json == {**body, "model": "claude-ok"}
    assert seen.headers["anthropic-beta"] == "context-management-2025-06-27"
    counted = httpx.post(
        f"{url}/count_tokens", json={**body, "model": "via-anthropic"}, headers=beta, timeout=30
    )
    assert counted.status_code == 200 and counted.headers["X-Gateway-Count"] == "exact"
    sent = upstream.find(path="/v1/messages/count_tokens")[-1]
    assert sent.json["tools"] == body["tools"] and "max_tokens" not in sent.json
    assert sent.headers["anthropic-beta"] == "context-management-2025-06-27"
    refused = httpx.post(url, json={**body, "model": "via-openai"}, headers=HEADERS, timeout=30)
    assert_envelope(refused, 400, "invalid_request_error")
    message = refused.json()["error"]["message"]
    assert "messages.0.content.0 (document block)" in message
    assert "tools.0 (web_search_20250305 server tool)" in message
    assert upstream.count(model="gpt-ok") == 0


def test_message_start_reports_a_local_prompt(live_gateway: LiveServer) -> None:
    body = {"model": "demo", "max_tokens": 3, "messages": HELLO, "stream": True}
    with httpx.stream(
        "POST", f"{live_gateway.url}/v1/messages", json=body, headers=HEADERS, timeout=60
    ) as response:
        lines = response.iter_lines()
        first, data = next(lines, ""), next(lines, "")
    assert first == "event: message_start"
    usage = json.loads(data.removeprefix("data: "))["message"]["usage"]
    assert prompt_of(usage) > 5  # counted before decoding began
