"""The upstream side of translation: requests an Anthropic client's request becomes
for an OpenAI-compatible provider, and what each provider's stream and whole
answer become in the internal form (and from there, in either protocol)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.base import ResultBuilder
from inference.cloud import anthropic as anthropic_upstream
from inference.cloud import openai as openai_upstream
from inference.cloud.config import ProviderConfig
from inference.cloud.model_server import ModelServerBackend
from inference.cloud.sse import SSEEvent, encode_sse
from inference.errors import UnsupportedFeature
from inference.types import (
    ChatRequest,
    Event,
    Finish,
    Message,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ToolCallDelta,
    WireEvent,
)
from inference.wire import anthropic as anthropic_wire
from inference.wire import openai as openai_wire

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
name = st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True)
inputs = st.dictionaries(name, st.one_of(st.integers(-1000, 1000), text), max_size=3)


@st.composite
def anthropic_requests(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for turn in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(text)})
        if draw(st.booleans()):
            calls = [
                {"type": "tool_use", "id": f"toolu_{turn}_{i}", "name": draw(name),
                 "input": draw(inputs)}
                for i in range(draw(st.integers(1, 2)))
            ]  # fmt: skip
            messages.append({"role": "assistant", "content": calls})
            results = [
                {"type": "tool_result", "tool_use_id": c["id"], "content": draw(text)}
                for c in calls
            ]
            messages.append({"role": "user", "content": results})
        else:
            messages.append(
                {"role": "assistant", "content": [{"type": "text", "text": draw(text)}]}
            )
    messages.append({"role": "user", "content": draw(text)})
    body: dict[str, Any] = {"model": "m", "max_tokens": draw(st.integers(1, 4096))}
    body["messages"] = messages
    if draw(st.booleans()):
        body["system"] = [
            {"type": "text", "text": draw(text)} for _ in range(draw(st.integers(1, 2)))
        ]
    for key, strategy in {
        "temperature": st.floats(0, 1, allow_nan=False),
        "top_p": st.floats(0, 1, allow_nan=False),
        "stop_sequences": st.lists(text, min_size=1, max_size=3),
    }.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    if draw(st.booleans()):
        body["tools"] = [
            {"name": draw(name), "description": draw(text),
             "input_schema": {"type": "object", "properties": {}}}
        ]  # fmt: skip
        body["tool_choice"] = {"type": draw(st.sampled_from(["auto", "any", "none"]))}
    return body


@settings(max_examples=200, deadline=None)
@given(anthropic_requests())
def test_anthropic_request_keeps_shared_fields_on_the_way_to_openai(body: dict[str, Any]) -> None:
    chat = anthropic_wire.parse_request(body)
    sent = openai_wire.request_body(chat, "gpt-x", stream=False)
    assert sent["max_tokens"] == body["max_tokens"]
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p")):
        assert sent.get(theirs) == body.get(ours)
    assert sent.get("stop") == body.get("stop_sequences")
    system = [m for m in sent["messages"] if m["role"] == "system"]
    # Several system blocks become one system message: many chat templates behind
    # OpenAI-compatible servers reject a second one.
    texts = [b["text"] for b in body.get("system", []) if b["text"]]
    assert [m["content"] for m in system] == (["\n\n".join(texts)] if texts else [])
    assert all(m["role"] != "system" for m in sent["messages"][1:])
    # Every tool call keeps its id, name and arguments; every result answers its call.
    calls = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for m in sent["messages"]
        for c in m.get("tool_calls") or []
    ]
    expected_calls = [
        (b["id"], b["name"], b["input"])
        for m in body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_use"
    ]
    assert calls == expected_calls
    results = [(m["tool_call_id"], m["content"]) for m in sent["messages"] if m["role"] == "tool"]
    expected_results = [
        (b["tool_use_id"], b["content"])
        for m in body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_result"
    ]
    assert results == expected_results
    if "tools" in body:
        assert [t["function"]["name"] for t in sent["tools"]] == [t["name"] for t in body["tools"]]
        mode = body["tool_choice"]["type"]
        assert sent["tool_choice"] == {"auto": "auto", "any": "required", "none": "none"}[mode]
    else:
        assert "tools" not in sent and "tool_choice" not in sent


def test_top_k_and_tool_choice_only_where_the_upstream_takes_them() -> None:
    chat = anthropic_wire.parse_request(
        {"model": "m", "max_tokens": 5, "top_k": 40, "tool_choice": {"type": "none"},
         "messages": [{"role": "user", "content": "hi"}]}
    )  # fmt: skip
    compatible = openai_wire.request_body(chat, "x", stream=False)
    assert compatible["top_k"] == 40  # vLLM, llama.cpp, Ollama take it
    assert "tool_choice" not in compatible  # OpenAI refuses a tool_choice without tools
    with pytest.raises(UnsupportedFeature, match="top_k"):
        openai_wire.request_body(chat, "x", stream=False, official=True)


async def events_of(
    *payloads: dict[str, Any] | str, named: bool = False
) -> AsyncIterator[SSEEvent]:
    for payload in payloads:
        if isinstance(payload, str):
            yield SSEEvent(payload)
        else:
            data = orjson.dumps(payload).decode()
            yield SSEEvent(data, payload["type"] if named else None)


def config(kind: str) -> ProviderConfig:
    return ProviderConfig(name="p", kind=kind, base_url="http://127.0.0.1:9", api_key="k")  # type: ignore[arg-type]


async def internal(events: AsyncIterator[Event]) -> list[Event]:
    return [e async for e in events if not isinstance(e, WireEvent)]


def block_start(index: int, **block: Any) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, kind: str, **delta: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": kind, **delta}}


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


ANTHROPIC_STREAM = [
    {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 12}}},
    block_start(0, type="thinking"),
    block_delta(0, "thinking_delta", thinking="hm"),
    block_delta(0, "signature_delta", signature="s1"),
    block_stop(0),
    block_start(1, type="text", text=""),
    block_delta(1, "text_delta", text="Two calls."),
    block_stop(1),
    block_start(2, type="tool_use", id="toolu_a", name="f", input={}),
    block_delta(2, "input_json_delta", partial_json='{"x":'),
    block_delta(2, "input_json_delta", partial_json=" 1}"),
    block_stop(2),
    block_start(3, type="tool_use", id="toolu_b", name="g", input={}),
    block_delta(3, "input_json_delta", partial_json="{}"),
    block_stop(3),
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}},
    {"type": "message_stop"},
]


async def test_anthropic_stream_blocks_become_tool_indices_thinking_and_usage() -> None:
    backend = anthropic_upstream.AnthropicBackend(config("anthropic"), "claude-x")
    request = ChatRequest("m", [Message("user", [TextPart("hi")])])
    got = await internal(backend.read_stream(events_of(*ANTHROPIC_STREAM, named=True), request))  # type: ignore[arg-type]
    assert got == [
        ThinkingDelta("hm"),
        ThinkingDelta("", "s1"),
        TextDelta("Two calls."),
        ToolCallDelta(0, "toolu_a", "f", ""),  # block 2 is the first tool call: index 0
        ToolCallDelta(0, arguments='{"x":'),
        ToolCallDelta(0, arguments=" 1}"),
        ToolCallDelta(1, "toolu_b", "g", ""),
        ToolCallDelta(1, arguments="{}"),
        Finish("tool_calls", got[-1].usage),  # type: ignore[union-attr]
    ]
    assert (got[-1].usage.input_tokens, got[-1].usage.output_tokens) == (12, 30)  # type: ignore[union-attr]
    # The same answer, whole, folds to the same result as the stream.
    whole = anthropic_wire.result_of(
        {"content": [
            {"type": "thinking", "thinking": "hm", "signature": "s1"},
            {"type": "text", "text": "Two calls."},
            {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {"x": 1}},
            {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {}},
        ], "stop_reason": "tool_use", "usage": {"input_tokens": 12, "output_tokens": 30}},
    )  # fmt: skip
    builder = ResultBuilder("m")
    for event in got:
        builder.add(event)
    folded = builder.result()
    assert [type(p).__name__ for p in folded.content] == [type(p).__name__ for p in whole.content]
    assert [json.loads(p.arguments) for p in folded.content if hasattr(p, "arguments")] == [
        json.loads(p.arguments) for p in whole.content if hasattr(p, "arguments")
    ]


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields}]}


def call(index: int, arguments: str, **head: Any) -> dict[str, Any]:
    if head:
        return {"index": index, "type": "function", "id": head["id"],
                "function": {"name": head["name"], "arguments": arguments}}  # fmt: skip
    return {"index": index, "function": {"arguments": arguments}}


OPENAI_STREAM: list[dict[str, Any] | str] = [
    delta(role="assistant", reasoning_content="hm"),
    delta(content="Two calls."),
    delta(tool_calls=[call(0, "", id="call_a", name="f")]),
    delta(tool_calls=[call(1, "{}", id="call_b", name="g")]),
    delta(tool_calls=[call(0, '{"x": 1}')]),
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}},
    "[DONE]",
]


async def test_openai_stream_interleaved_calls_reasoning_and_usage() -> None:
    backend = openai_upstream.OpenAIBackend(config("openai"), "gpt-x")
    request = ChatRequest("m", [Message("user", [TextPart("hi")])])
    got = await internal(backend.read_stream(events_of(*OPENAI_STREAM), request))  # type: ignore[arg-type]
    assert got[:5] == [
        ThinkingDelta("hm"),
        TextDelta("Two calls."),
        ToolCallDelta(0, "call_a", "f", ""),
        ToolCallDelta(1, "call_b", "g", "{}"),
        ToolCallDelta(0, None, None, '{"x": 1}'),
    ]
    finish = got[-1]
    assert isinstance(finish, Finish) and finish.reason == "tool_calls"
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (9, 4)
    # To an Anthropic client: each call its own block, its arguments at its index.
    encoder = anthropic_wire.StreamEncoder("m")
    frames = b"".join(encoder.encode(e) for e in got).decode().strip().split("\n\n")
    data = [json.loads(f.split("data: ", 1)[1]) for f in frames]
    starts = [d["content_block"] for d in data if d["type"] == "content_block_start"]
    assert [(b["type"], b.get("name")) for b in starts] == [
        ("thinking", None), ("text", None), ("tool_use", "f"), ("tool_use", "g"),
    ]  # fmt: skip
    pieces: dict[int, str] = {}
    for d in data:
        if d["type"] == "content_block_delta" and d["delta"]["type"] == "input_json_delta":
            pieces[d["index"]] = pieces.get(d["index"], "") + d["delta"]["partial_json"]
    assert {i: json.loads(p) for i, p in pieces.items()} == {2: {"x": 1}, 3: {}}


async def test_openai_stop_reason_names_the_stop_sequence() -> None:
    """vLLM says which stop string ended the answer; Anthropic clients get it back."""
    backend = openai_upstream.OpenAIBackend(config("openai"), "gpt-x")
    request = ChatRequest("m", [Message("user", [TextPart("hi")])])
    stream = [
        {"choices": [{"index": 0, "delta": {"content": "one two"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}]},
        "[DONE]",
    ]
    got = await internal(backend.read_stream(events_of(*stream), request))  # type: ignore[arg-type]
    assert got[-1] == Finish("stop_sequence", got[-1].usage, "END")  # type: ignore[union-attr]
    whole = openai_wire.result_of(
        {"choices": [{"message": {"content": "one two"}, "finish_reason": "stop",
                      "stop_reason": "END"}]},
    )  # fmt: skip
    assert (whole.finish.reason, whole.finish.stop_sequence) == ("stop_sequence", "END")
    body = anthropic_wire.message_body(whole, "m")
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "END")


async def test_openai_stream_without_finish_is_a_failure_before_done_is_relayed() -> None:
    backend = openai_upstream.OpenAIBackend(config("openai"), "gpt-x")
    request = ChatRequest("m", [Message("user", [TextPart("hi")])], source_protocol="openai")
    stream = [{"choices": [{"index": 0, "delta": {"content": "cut"}}]}, "[DONE]"]
    relayed: list[bytes] = []
    with pytest.raises(Exception, match="without a finish reason"):
        async for event in backend.read_stream(events_of(*stream), request):  # type: ignore[arg-type]
            if isinstance(event, WireEvent):
                relayed.append(event.data)
    assert all(b"[DONE]" not in data for data in relayed)  # the SDK would stop silently there


def test_openai_client_stream_passthrough_hides_the_usage_it_did_not_ask_for() -> None:
    chat, _ = openai_wire.parse_request(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    body = openai_wire.request_body(chat, "gpt-x", stream=True)
    assert body["stream_options"] == {"include_usage": True}
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}}], "usage": None}
    decoder = openai_wire.StreamDecoder(chat)
    relayed = next(iter(decoder.decode(chunk, lambda: encode_sse(SSEEvent(json.dumps(chunk))))))
    assert isinstance(relayed, WireEvent) and b"usage" not in relayed.data
    last = {"id": "c", "choices": [], "usage": {"prompt_tokens": 1}}
    assert list(decoder.decode(last, lambda: encode_sse(SSEEvent(json.dumps(last))))) == []
    assert decoder.usage.input_tokens == 1  # still counted for the key and the log


def test_upstream_cache_reads_become_cached_tokens() -> None:
    """Prompt-cache hits an upstream reports reach the usage (the request log's
    cached tokens, the client's own usage): Anthropic's cache_read_input_tokens,
    OpenAI's prompt_tokens_details.cached_tokens."""
    anthropic_usage = anthropic_wire.usage_of(
        {"input_tokens": 10, "cache_creation_input_tokens": 5,
         "cache_read_input_tokens": 100, "output_tokens": 7}
    )  # fmt: skip
    assert (anthropic_usage.input_tokens, anthropic_usage.cached_tokens) == (115, 100)
    openai_usage = openai_wire.usage_of(
        {"prompt_tokens": 120, "completion_tokens": 7,
         "prompt_tokens_details": {"cached_tokens": 96}}
    )  # fmt: skip
    assert (openai_usage.input_tokens, openai_usage.cached_tokens) == (120, 96)
    no_details = openai_wire.usage_of({"prompt_tokens": 3, "prompt_tokens_details": None})
    assert no_details.cached_tokens == 0


async def test_an_anthropic_stream_keeps_its_cache_reads_to_the_finish() -> None:
    backend = anthropic_upstream.AnthropicBackend(config("anthropic"), "claude-x")
    request = ChatRequest("m", [Message("user", [TextPart("hi")])])
    stream = [
        {"type": "message_start", "message": {"usage": {
            "input_tokens": 4, "cache_read_input_tokens": 2048, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ]  # fmt: skip
    got = await internal(backend.read_stream(events_of(*stream, named=True), request))  # type: ignore[arg-type]
    usage = got[-1].usage  # type: ignore[union-attr]
    assert (usage.input_tokens, usage.cached_tokens, usage.output_tokens) == (2052, 2048, 3)


def _chat_with_a_late_system_message() -> ChatRequest:
    return ChatRequest("m", [
        Message("system", [TextPart("Be brief.")]),
        Message("system", [TextPart("Answer in French.")]),
        Message("user", [TextPart("hi")]),
        Message("assistant", [TextPart("salut")]),
        Message("system", [TextPart("Now in English.")]),
        Message("user", [TextPart("again")]),
    ])  # fmt: skip


def test_system_messages_stay_where_the_client_put_them_for_openai_compatible_servers() -> None:
    sent = openai_wire.request_body(_chat_with_a_late_system_message(), "gpt-x", stream=False)
    # Adjacent system messages (an Anthropic client's blocks) are one prompt: one
    # message; a later one stays in its place, as the OpenAI protocol allows.
    assert [(m["role"], m["content"]) for m in sent["messages"] if m["role"] == "system"] == [
        ("system", "Be brief.\n\nAnswer in French."),
        ("system", "Now in English."),
    ]
    assert [m["role"] for m in sent["messages"]] == [
        "system", "user", "assistant", "system", "user"
    ]  # fmt: skip


def test_a_model_server_gets_every_system_text_as_one_first_message() -> None:
    """The gateway's model servers run local chat templates, many of which (Llama,
    Mistral...) refuse a second system message or one after the first turn."""
    backend = ModelServerBackend(config("model-server"), "demo")
    sent = backend.body(_chat_with_a_late_system_message(), stream=False)
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][0]["content"] == "Be brief.\n\nAnswer in French.\n\nNow in English."
    plain = openai_upstream.OpenAIBackend(config("openai"), "gpt-x")
    assert [m["role"] for m in plain.body(_chat_with_a_late_system_message(), stream=False)[
        "messages"
    ]].count("system") == 2
