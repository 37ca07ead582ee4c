"""The fake upstream speaks both providers' wire formats and misbehaves on request.

Driven with the official SDKs (what the gateway's cloud clients must interoperate
with) and with raw httpx/sockets for the faults, so what a client really sees on
the wire is asserted, not what a parser makes of it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from fake_upstream import FakeUpstream, FaultSpecError, Kind, parse_fault

from .conftest import read_timeout

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-123"
TOOLS_OPENAI: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "days", "unit"],
            },
        },
    }
]
TOOLS_ANTHROPIC: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": TOOLS_OPENAI[0]["function"]["parameters"],
    }
]
WEATHER_ARGS = {"city": "weather in Paris", "days": 3, "unit": "celsius"}


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream(api_keys={KEY})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def threaded_server() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_keys={KEY}) as server:
        yield server


@pytest.fixture
def threaded(threaded_server: FakeUpstream) -> FakeUpstream:
    threaded_server.reset()
    return threaded_server


@dataclass
class Proto:
    name: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, model: str, *, stream: bool = False, text: str = "hello world") -> Any:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "stream": stream,
        }
        if self.name == "anthropic":
            body["max_tokens"] = 100
        return body

    def error_type(self, payload: Any) -> str:
        return str(payload["error"]["type"])


OPENAI = Proto("openai", "/v1/chat/completions", {"authorization": f"Bearer {KEY}"})
ANTHROPIC = Proto(
    "anthropic", "/v1/messages", {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
)
PROTOS = [pytest.param(OPENAI, id="openai"), pytest.param(ANTHROPIC, id="anthropic")]
STREAMING = [pytest.param(False, id="json"), pytest.param(True, id="stream")]


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """(event, data) pairs of a complete or partial SSE body."""
    events: list[tuple[str | None, str]] = []
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if data:
            events.append((name, "\n".join(data)))
    return events


def is_content(proto: Proto, event: str | None, data: str) -> bool:
    if proto.name == "anthropic":
        return event == "content_block_delta"
    if data == "[DONE]":
        return False
    choices = json.loads(data).get("choices") or [{}]
    return bool(choices[0].get("delta", {}).get("content"))


async def read_stream(
    client: httpx.AsyncClient, proto: Proto, model: str
) -> tuple[list[tuple[str | None, str]], BaseException | None]:
    """Events received before the stream ended, and the error it ended with (if any)."""
    buf = ""
    error: BaseException | None = None
    try:
        req = client.build_request(
            "POST", proto.path, headers=proto.headers, json=proto.body(model, stream=True)
        )
        response = await client.send(req, stream=True)
        try:
            assert response.status_code == 200
            async for piece in response.aiter_text():
                buf += piece
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        error = exc
    return parse_sse(buf), error


def contents(proto: Proto, events: list[tuple[str | None, str]]) -> list[str]:
    out = []
    for name, data in events:
        if not is_content(proto, name, data):
            continue
        parsed = json.loads(data)
        if proto.name == "anthropic":
            out.append(parsed["delta"]["text"])
        else:
            out.append(parsed["choices"][0]["delta"]["content"])
    return out


def client_for(server: FakeUpstream, timeout: float | httpx.Timeout = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=timeout)


# -- fault names --------------------------------------------------------------------------


def test_parse_fault_names() -> None:
    assert parse_fault("gpt-4o").kind is Kind.HEALTHY
    assert parse_fault("fault-503") == parse_fault("fault-503")
    f = parse_fault("fault-429:1.5")
    assert (f.kind, f.status, f.number, f.once) == (Kind.STATUS, 429, 1.5, False)
    assert parse_fault("fault-500-once").once
    assert parse_fault("cut-after:3") == parse_fault("fault-cut-after:3")
    assert parse_fault("fault-cut-after:3").count == 3
    assert parse_fault("fault-malformed").count == 1
    assert parse_fault("words:40").words == 40
    for bad in ("fault-cut-after", "fault-slow-tokens:x", "fault-flaky:xz", "fault-200"):
        with pytest.raises(FaultSpecError):
            parse_fault(bad)


# -- OpenAI SDK ---------------------------------------------------------------------------


def test_openai_sync_completion_and_recording(threaded: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=f"{threaded.url}/v1", api_key=KEY, max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
    )
    text = completion.choices[0].message.content
    assert text is not None and text.startswith("echo: hello there lorem ipsum")
    assert len(text.split()) == 16
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 16)
    assert completion.usage.total_tokens == 20
    assert completion.model == "gpt-4o-mini"
    assert completion._request_id and completion._request_id.startswith("req_")

    [seen] = threaded.requests
    assert (seen.method, seen.path, seen.model, seen.protocol) == (
        "POST",
        "/v1/chat/completions",
        "gpt-4o-mini",
        "openai",
    )
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.json["messages"][1]["content"] == "hello there"
    assert not seen.stream
    assert threaded.count() == threaded.count(model="gpt-4o-mini") == 1
    assert threaded.count(path="/v1/messages") == 0


def test_openai_sync_stream_with_usage(threaded: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=f"{threaded.url}/v1", api_key=KEY, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=5,
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me lorem ipsum"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "length" and set(finish[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.id == chunks[0].id for c in chunks)
    assert threaded.requests[0].stream


async def test_openai_async_stream_helper_and_stop(upstream: FakeUpstream) -> None:
    client = openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key=KEY, max_retries=0)
    async with client.chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "one two three four"}]
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == (
        "echo: one two three four lorem ipsum dolor sit amet consectetur adipiscing elit sed do "
        "eiusmod"
    )
    stopped = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "one two three four"}], stop="three"
    )
    assert stopped.choices[0].message.content == "echo: one two"
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage is not None and stopped.usage.completion_tokens == 3
    await client.close()


def test_openai_tool_call_then_text(threaded: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=f"{threaded.url}/v1", api_key=KEY, max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "weather in Paris"}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS_OPENAI)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS

    # Streaming: the arguments arrive in several deltas that concatenate to the same JSON.
    stream = client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=TOOLS_OPENAI, stream=True
    )
    deltas = [c.choices[0].delta for c in stream if c.choices]
    head = deltas[0].tool_calls
    assert head and head[0].id and head[0].function and head[0].function.name == "get_weather"
    pieces = [
        d.tool_calls[0].function.arguments
        for d in deltas[1:]
        if d.tool_calls and d.tool_calls[0].function and d.tool_calls[0].function.arguments
    ]
    assert len(pieces) > 3 and json.loads("".join(pieces)) == WEATHER_ARGS

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny 21C"},
    ]
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS_OPENAI)
    assert second.choices[0].finish_reason == "stop"
    assert (second.choices[0].message.content or "").startswith("echo: sunny 21C")
    none = client.chat.completions.create(
        model="gpt-4o", messages=messages[:1], tools=TOOLS_OPENAI, tool_choice="none"
    )
    assert none.choices[0].finish_reason == "stop"


def test_openai_models_and_retry_headers(threaded: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=f"{threaded.url}/v1", api_key=KEY, max_retries=2)
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]
    # The SDK honours a fractional Retry-After, so the retry costs ~10 ms.
    done = client.chat.completions.create(
        model="fault-500-once:0.01", messages=[{"role": "user", "content": "x"}]
    )
    assert done.choices[0].message.content
    attempts = threaded.find(model="fault-500-once:0.01")
    assert [r.headers["x-stainless-retry-count"] for r in attempts] == ["0", "1"]
    assert attempts[1].monotonic - attempts[0].monotonic >= 0.01


def test_openai_sdk_error_classes(threaded: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=f"{threaded.url}/v1", api_key=KEY, max_retries=0)
    msgs: list[Any] = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="fault-context-length", messages=msgs)
    assert bad.value.code == "context_length_exceeded" and bad.value.param == "messages"
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="fault-429:7", messages=msgs)
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.AuthenticationError) as denied:
        client.with_options(api_key="sk-wrong-key").chat.completions.create(
            model="gpt-4o", messages=msgs
        )
    assert denied.value.code == "invalid_api_key"
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=read_timeout(0.2)).chat.completions.create(
            model="fault-hang", messages=msgs
        )
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="fault-reset", messages=msgs)
    stream = client.chat.completions.create(
        model="fault-stream-overloaded", messages=msgs, stream=True
    )
    with pytest.raises(openai.APIError, match="server had an error"):
        list(stream)


# -- Anthropic SDK ------------------------------------------------------------------------


def test_anthropic_sync_message_and_headers(threaded: FakeUpstream) -> None:
    client = anthropic.Anthropic(base_url=threaded.url, api_key=KEY, max_retries=0)
    message = client.messages.create(
        model="claude-x",
        max_tokens=4,
        system="short answers",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi there friend"}]}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: hi there friend"
    assert message.stop_reason == "max_tokens" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)
    assert message.id.startswith("msg_")
    [seen] = threaded.requests
    # Recent SDKs send the key as Bearer, older ones as x-api-key; both are accepted.
    key = seen.headers.get("x-api-key") or seen.headers["authorization"].removeprefix("Bearer ")
    assert key == KEY and seen.headers["anthropic-version"]
    assert seen.protocol == "anthropic"
    count = client.messages.count_tokens(
        model="claude-x",
        system="short answers",
        messages=[{"role": "user", "content": "hi there friend"}],
    )
    assert count.input_tokens == 5
    assert [m.id for m in client.models.list()][:1] == ["gpt-4o-mini"]
    assert client.models.retrieve("claude-haiku-4-5").display_name == "Claude Haiku 4 5"


def test_anthropic_raw_stream_event_sequence(threaded: FakeUpstream) -> None:
    # The SDK hides "ping", so the wire order is checked on the raw body.
    with httpx.Client(base_url=threaded.url) as http:
        body = ANTHROPIC.body("claude-x", stream=True, text="a b c d")
        body["max_tokens"] = 3
        text = http.post("/v1/messages", headers=ANTHROPIC.headers, json=body).text
    names = [name for name, _ in parse_sse(text)]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    events = [json.loads(data) for _, data in parse_sse(text)]
    assert [e["type"] for e in events] == names
    assert events[0]["message"]["usage"]["input_tokens"] == 4
    assert events[-2]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert events[-2]["usage"]["output_tokens"] == 3


async def test_anthropic_async_stream_helper(upstream: FakeUpstream) -> None:
    client = anthropic.AsyncAnthropic(base_url=upstream.url, api_key=KEY, max_retries=0)
    async with client.messages.stream(
        model="claude-x",
        max_tokens=50,
        messages=[{"role": "user", "content": "what is up"}],
        stop_sequences=["ipsum"],
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "echo: what is up lorem"
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "ipsum"
    assert final.usage.output_tokens == 5
    await client.close()


def test_anthropic_tool_use_then_text(threaded: FakeUpstream) -> None:
    client = anthropic.Anthropic(base_url=threaded.url, api_key=KEY, max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "weather in Paris"}]
    with client.messages.stream(
        model="claude-x", max_tokens=100, messages=messages, tools=TOOLS_ANTHROPIC
    ) as stream:
        partials = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    assert len(partials) > 3
    assert json.loads("".join(partials)) == WEATHER_ARGS
    [block] = final.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == WEATHER_ARGS and final.stop_reason == "tool_use"
    assert final.usage.output_tokens == len(partials)

    plain = client.messages.create(
        model="claude-x", max_tokens=100, messages=messages, tools=TOOLS_ANTHROPIC
    )
    assert plain.content[0].type == "tool_use"
    messages += [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny 21C"}],
        },
    ]
    answer = client.messages.create(
        model="claude-x", max_tokens=100, messages=messages, tools=TOOLS_ANTHROPIC
    )
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text"
    assert answer.content[0].text.startswith("echo: sunny 21C")


def test_anthropic_sdk_errors(threaded: FakeUpstream) -> None:
    client = anthropic.Anthropic(base_url=threaded.url, api_key=KEY, max_retries=0)
    msgs: list[Any] = [{"role": "user", "content": "x"}]
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.create(model="fault-529", max_tokens=10, messages=msgs)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        client.messages.create(model="fault-context-length", max_tokens=10, messages=msgs)
    with pytest.raises(anthropic.AuthenticationError):
        client.with_options(api_key="nope").messages.create(
            model="claude-x", max_tokens=10, messages=msgs
        )
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model="fault-401", max_tokens=10, messages=msgs)
    with pytest.raises(anthropic.APIStatusError) as in_stream:
        for _ in client.messages.create(
            model="fault-stream-overloaded:2", max_tokens=10, messages=msgs, stream=True
        ):
            pass
    assert in_stream.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        client.post("/v1/messages", body={"model": "claude-x", "messages": msgs}, cast_to=object)


# -- auth ---------------------------------------------------------------------------------


async def test_auth_rules(upstream: FakeUpstream) -> None:
    async with client_for(upstream) as http:
        body = OPENAI.body("gpt-4o")
        missing = await http.post(OPENAI.path, json=body)
        assert missing.status_code == 401 and missing.json()["error"]["code"] is None
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
        wrong = await http.post(OPENAI.path, json=body, headers={"authorization": "Bearer sk-x"})
        assert wrong.json()["error"]["code"] == "invalid_api_key"

        a_body = ANTHROPIC.body("claude-x")
        version = {"anthropic-version": "2023-06-01"}
        bearer = await http.post(
            ANTHROPIC.path, json=a_body, headers={"authorization": f"Bearer {KEY}", **version}
        )
        assert bearer.status_code == 200
        no_key = await http.post(ANTHROPIC.path, json=a_body, headers=version)
        assert no_key.status_code == 401
        assert no_key.json()["type"] == "error"
        assert no_key.json()["error"]["type"] == "authentication_error"
        no_version = await http.post(ANTHROPIC.path, json=a_body, headers={"x-api-key": KEY})
        assert no_version.status_code == 400
        assert no_version.json()["error"]["type"] == "invalid_request_error"
    assert upstream.count() == 5


async def test_any_key_when_unconfigured() -> None:
    async with FakeUpstream() as server, client_for(server) as http:
        ok = await http.post(
            OPENAI.path, json=OPENAI.body("m"), headers={"authorization": "Bearer whatever"}
        )
        assert ok.status_code == 200
        empty = await http.post(OPENAI.path, json=OPENAI.body("m"), headers={"authorization": ""})
        assert empty.status_code == 401


# -- status faults --------------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("proto", PROTOS)
async def test_500_once_then_healthy(upstream: FakeUpstream, proto: Proto, stream: bool) -> None:
    async with client_for(upstream) as http:
        body = proto.body("fault-500-once", stream=stream)
        first = await http.post(proto.path, headers=proto.headers, json=body)
        assert first.status_code == 500
        assert proto.error_type(first.json()) in {"server_error", "api_error"}
        second = await http.post(proto.path, headers=proto.headers, json=body)
        assert second.status_code == 200
        upstream.reset()  # "once" counters are per model name and reset with the rest
        third = await http.post(proto.path, headers=proto.headers, json=body)
        assert third.status_code == 500
    assert upstream.count(model="fault-500-once") == 1


@pytest.mark.parametrize("proto", PROTOS)
async def test_status_faults(upstream: FakeUpstream, proto: Proto) -> None:
    async with client_for(upstream) as http:

        async def post(model: str, stream: bool = False) -> httpx.Response:
            body = proto.body(model, stream=stream)
            return await http.post(proto.path, headers=proto.headers, json=body)

        for _ in range(3):
            assert (await post("fault-503", stream=True)).status_code == 503
        limited = await post("fault-429:2")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
        bare = await post("fault-429")
        assert bare.status_code == 429 and "retry-after" not in bare.headers
        assert proto.error_type(bare.json()) in {"requests", "rate_limit_error"}
        denied = await post("fault-401")
        assert denied.status_code == 401
        overloaded = await post("fault-529", stream=True)
        assert overloaded.status_code == 529
        too_long = await post("fault-context-length")
        assert too_long.status_code == 400
        if proto.name == "openai":
            assert bare.json()["error"]["code"] == "rate_limit_exceeded"
            assert too_long.json()["error"]["code"] == "context_length_exceeded"
        else:
            assert overloaded.json()["error"]["type"] == "overloaded_error"
            assert "prompt is too long" in too_long.json()["error"]["message"]
        bad_spec = await post("fault-cut-after")
        assert bad_spec.status_code == 400
    assert upstream.count(model="fault-503") == 3


async def test_flaky_pattern(upstream: FakeUpstream) -> None:
    async with client_for(upstream) as http:
        body = OPENAI.body("fault-flaky:x5.")
        codes = [
            (await http.post(OPENAI.path, headers=OPENAI.headers, json=body)).status_code
            for _ in range(6)
        ]
    assert codes == [503, 500, 200, 503, 500, 200]


async def test_words_option(upstream: FakeUpstream) -> None:
    async with client_for(upstream) as http:
        body = OPENAI.body("words:40")
        reply = await http.post(OPENAI.path, headers=OPENAI.headers, json=body)
    assert len(reply.json()["choices"][0]["message"]["content"].split()) == 40
    assert reply.json()["usage"]["completion_tokens"] == 40


# -- connection faults ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("proto", PROTOS)
async def test_reset_close_and_hang(upstream: FakeUpstream, proto: Proto, stream: bool) -> None:
    async with client_for(upstream) as http:
        with pytest.raises(httpx.ReadError):  # ECONNRESET: the RST was real
            await http.post(proto.path, headers=proto.headers, json=proto.body("fault-reset"))
        with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
            await http.post(proto.path, headers=proto.headers, json=proto.body("fault-close"))
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                proto.path,
                headers=proto.headers,
                json=proto.body("fault-hang", stream=stream),
                timeout=read_timeout(0.2),
            )
        assert time.monotonic() - started >= 0.2
        # A healthy request afterwards gets a fresh connection and an answer.
        ok = await http.post(proto.path, headers=proto.headers, json=proto.body("m"))
        assert ok.status_code == 200
    assert upstream.count(model="fault-reset") == upstream.count(model="fault-hang") == 1


async def test_stop_drops_hung_connections() -> None:
    server = FakeUpstream()
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = json.dumps(OPENAI.body("fault-hang")).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n"
        b"content-length: %d\r\n\r\n%b" % (len(body), body)
    )
    await writer.drain()
    while server.count() == 0:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(server.stop(), 2)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


# -- stream faults --------------------------------------------------------------------------


@pytest.mark.parametrize("proto", PROTOS)
async def test_healthy_stream_ends_with_terminator(upstream: FakeUpstream, proto: Proto) -> None:
    async with client_for(upstream) as http:
        events, error = await read_stream(http, proto, "m")
        no_done, no_done_error = await read_stream(http, proto, "fault-no-done")
    assert error is None and no_done_error is None
    assert len(contents(proto, events)) == 16
    last = "[DONE]" if proto.name == "openai" else '{"type":"message_stop"}'
    assert events[-1][1] == last
    assert len(contents(proto, no_done)) == 16
    assert no_done[-1][1] != last and len(no_done) == len(events) - 1
    if proto.name == "openai":
        assert json.loads(no_done[-1][1])["choices"][0]["finish_reason"] == "stop"
    else:
        assert no_done[-1][0] == "message_delta"


@pytest.mark.parametrize("proto", PROTOS)
async def test_cut_after(upstream: FakeUpstream, proto: Proto) -> None:
    async with client_for(upstream) as http:
        events, error = await read_stream(http, proto, "fault-cut-after:3")
        assert isinstance(error, httpx.RemoteProtocolError)
        assert contents(proto, events) == ["echo:", " hello", " world"]
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(proto.path, headers=proto.headers, json=proto.body("cut-after:3"))


@pytest.mark.parametrize("proto", PROTOS)
async def test_stall_after(upstream: FakeUpstream, proto: Proto) -> None:
    async with client_for(upstream, timeout=read_timeout(0.3)) as http:
        events, error = await read_stream(http, proto, "fault-stall-after:2")
        assert isinstance(error, httpx.ReadTimeout)
        assert contents(proto, events) == ["echo:", " hello"]
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                proto.path, headers=proto.headers, json=proto.body("fault-stall-after:2")
            )


@pytest.mark.parametrize("proto", PROTOS)
async def test_slow_first_token(upstream: FakeUpstream, proto: Proto) -> None:
    model = "fault-slow-first-token:0.25"
    async with client_for(upstream) as http:
        started = time.monotonic()
        req = http.build_request(
            "POST", proto.path, headers=proto.headers, json=proto.body(model, stream=True)
        )
        response = await http.send(req, stream=True)
        headers_at = time.monotonic() - started
        first_content_at = None
        buf = ""
        async for piece in response.aiter_text():
            buf += piece
            if first_content_at is None and contents(proto, parse_sse(buf)):
                first_content_at = time.monotonic() - started
        await response.aclose()
        assert first_content_at is not None and first_content_at >= 0.25
        assert headers_at < first_content_at
        assert len(contents(proto, parse_sse(buf))) == 16

        started = time.monotonic()
        reply = await http.post(proto.path, headers=proto.headers, json=proto.body(model))
        assert reply.status_code == 200 and time.monotonic() - started >= 0.25


@pytest.mark.parametrize("proto", PROTOS)
async def test_a_slow_first_token_comes_after_the_head_and_preamble(
    upstream: FakeUpstream, proto: Proto
) -> None:
    """The head and the preamble go out at once, the first token only after the
    delay: with a delay far past the client's timeout, the head and preamble
    still arrive (no margin on how fast: the client stops reading at the preamble)."""
    async with client_for(upstream, timeout=10.0) as http:
        request = http.build_request(
            "POST", proto.path, headers=proto.headers,
            json=proto.body("fault-slow-first-token:60", stream=True),
        )  # fmt: skip
        response = await http.send(request, stream=True)
        assert response.status_code == 200
        buf = ""
        async for piece in response.aiter_text():
            buf += piece
            if parse_sse(buf):
                break  # the preamble's first event: before any token could come
        await response.aclose()
    events = parse_sse(buf)
    assert events and not contents(proto, events)


async def test_slow_tokens(upstream: FakeUpstream) -> None:
    async with client_for(upstream) as http:
        started = time.monotonic()
        events, error = await read_stream(http, ANTHROPIC, "fault-slow-tokens:0.01")
    assert error is None and len(contents(ANTHROPIC, events)) == 16
    assert time.monotonic() - started >= 0.16


@pytest.mark.parametrize("proto", PROTOS)
async def test_malformed_event(upstream: FakeUpstream, proto: Proto) -> None:
    async with client_for(upstream) as http:
        events, error = await read_stream(http, proto, "fault-malformed:2")
        assert error is None
        bad = []
        for index, (_, data) in enumerate(events):
            if data == "[DONE]":
                continue
            try:
                json.loads(data)
            except ValueError:
                bad.append(index)
        assert len(bad) == 1 and 0 < bad[0] < len(events) - 2
        assert len(contents(proto, events[: bad[0]])) == 2
        assert len(contents(proto, events[: bad[0]] + events[bad[0] + 1 :])) == 16
        plain = await http.post(
            proto.path, headers=proto.headers, json=proto.body("fault-malformed")
        )
        assert plain.status_code == 200
        with pytest.raises(ValueError):
            plain.json()


@pytest.mark.parametrize("proto", PROTOS)
async def test_stream_overloaded(upstream: FakeUpstream, proto: Proto) -> None:
    async with client_for(upstream) as http:
        events, error = await read_stream(http, proto, "fault-stream-overloaded:1")
        assert error is None
        assert len(contents(proto, events)) == 1
        name, data = events[-1]
        if proto.name == "anthropic":
            assert name == "error"
            assert json.loads(data)["error"] == {
                "type": "overloaded_error",
                "message": "Overloaded",
            }
        else:
            assert json.loads(data)["error"]["type"] == "server_error"
        plain = await http.post(
            proto.path, headers=proto.headers, json=proto.body("fault-stream-overloaded")
        )
        assert plain.status_code == (529 if proto.name == "anthropic" else 503)


def test_malformed_breaks_sdk_parsing(threaded: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=f"{threaded.url}/v1", api_key=KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="fault-malformed", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(json.JSONDecodeError):
        list(stream)


# -- control plane ----------------------------------------------------------------------------


async def test_http_control_plane(upstream: FakeUpstream) -> None:
    async with client_for(upstream) as http:

        async def call(model: str) -> int:
            body = ANTHROPIC.body(model)
            return (
                await http.post(ANTHROPIC.path, headers=ANTHROPIC.headers, json=body)
            ).status_code

        assert (await http.get("/_control/health")).json() == {"ok": True}
        rule = {"model": "claude-*", "status": 502, "count": 2}
        assert (await http.post("/_control/fail", json=rule)).status_code == 200
        assert [await call("claude-a"), await call("other"), await call("claude-b")] == [
            502,
            200,
            502,
        ]
        assert await call("claude-a") == 200

        seen = (await http.get("/_control/requests", params={"model": "claude-a"})).json()
        assert seen["count"] == 2
        assert seen["requests"][0]["headers"]["x-api-key"] == KEY
        assert seen["requests"][0]["json"]["model"] == "claude-a"
        assert (await http.get("/_control/count")).json() == {"count": 4}

        forever = {"model": "x", "fault": "fault-reset", "count": None}
        await http.post("/_control/fail", json=forever)
        for _ in range(2):
            with pytest.raises(httpx.ReadError):
                await call("x")
        assert (await http.get("/_control/rules")).json()["rules"][0]["remaining"] is None
        await http.post("/_control/clear")
        assert await call("x") == 200

        bad = await http.post("/_control/fail", json={"fault": "nonsense"})
        assert bad.status_code == 400
        await http.post("/_control/reset")
        assert (await http.get("/_control/count")).json() == {"count": 0}
    assert upstream.requests == []


def test_python_fail_next(threaded: FakeUpstream) -> None:
    client = anthropic.Anthropic(base_url=threaded.url, api_key=KEY, max_retries=0)
    msgs: list[Any] = [{"role": "user", "content": "x"}]
    threaded.fail_next("claude-*", status=429, count=1, retry_after=3)
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="claude-x", max_tokens=5, messages=msgs)
    assert limited.value.response.headers["retry-after"] == "3"
    assert client.messages.create(model="claude-x", max_tokens=5, messages=msgs).content
    threaded.fail_next(fault="fault-cut-after:1", count=None)
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model="claude-x", max_tokens=5, messages=msgs)
    threaded.clear_failures()
    assert client.messages.create(model="claude-x", max_tokens=5, messages=msgs).content
    assert threaded.count(model="claude-x") == 4


# -- HTTP/1.1 plumbing --------------------------------------------------------------------------


async def test_keep_alive_and_chunked_upload(upstream: FakeUpstream) -> None:
    async with client_for(upstream) as http:
        for _ in range(3):
            ok = await http.post(OPENAI.path, headers=OPENAI.headers, json=OPENAI.body("m"))
            assert ok.headers["connection"] == "keep-alive"
        events, _ = await read_stream(http, OPENAI, "m")
        assert events[-1][1] == "[DONE]"

        async def upload() -> AsyncIterator[bytes]:
            data = json.dumps(OPENAI.body("m", text="chunked body")).encode()
            yield data[:10]
            yield data[10:]

        chunked = await http.post(OPENAI.path, headers=OPENAI.headers, content=upload())
        assert chunked.json()["choices"][0]["message"]["content"].startswith("echo: chunked body")
        closing = {**OPENAI.headers, "connection": "close"}
        await http.post(OPENAI.path, headers=closing, json=OPENAI.body("m"))
        await http.post(OPENAI.path, headers=OPENAI.headers, json=OPENAI.body("m"))
    ids = [r.connection for r in upstream.requests]
    assert len(set(ids[:6])) == 1 and ids[6] != ids[5]
    assert upstream.requests[4].headers["transfer-encoding"] == "chunked"


async def test_garbage_and_unknown_routes(upstream: FakeUpstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 2)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"connection: close" in answer
    writer.close()
    async with client_for(upstream) as http:
        missing = await http.get("/v1/nope", headers=OPENAI.headers)
        assert missing.status_code == 404 and "error" in missing.json()
        wrong_method = await http.get("/v1/chat/completions", headers=OPENAI.headers)
        assert wrong_method.status_code == 405
        not_json = await http.post(OPENAI.path, headers=OPENAI.headers, content=b"{oops")
        assert not_json.status_code == 400
        unknown_model = await http.get("/v1/models/none", headers=OPENAI.headers)
        assert unknown_model.json()["error"]["code"] == "model_not_found"


def test_standalone_process() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fake_upstream", "--port", str(port), "--api-key", KEY],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"fake-upstream listening on http://127.0.0.1:{port}"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            reply = http.post(ANTHROPIC.path, headers=ANTHROPIC.headers, json=ANTHROPIC.body("c"))
            assert reply.json()["content"][0]["text"].startswith("echo: hello world")
            assert http.get("/_control/count", params={"model": "c"}).json() == {"count": 1}
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        if proc.stdout is not None:
            proc.stdout.close()


async def test_recording_can_be_capped_but_counts_stay_exact() -> None:
    async with FakeUpstream(max_recorded=2) as capped, client_for(capped) as http:
        for i in range(5):
            body = OPENAI.body("m", text=f"request {i}")
            await http.post(OPENAI.path, headers=OPENAI.headers, json=body)
        assert capped.count() == 5
        assert [r.json["messages"][0]["content"] for r in capped.requests] == [
            "request 3",
            "request 4",
        ]
    async with FakeUpstream(record=False) as silent, client_for(silent) as http:
        await http.post(OPENAI.path, headers=OPENAI.headers, json=OPENAI.body("m"))
        assert silent.count(model="m") == 1 and silent.requests == []
