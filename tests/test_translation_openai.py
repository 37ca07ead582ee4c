"""Property tests of the OpenAI translators: what both protocols share survives."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from inference.base import ResultBuilder
from inference.types import Finish, TextDelta, ToolCallDelta, Usage
from inference.wire import anthropic as anthropic_upstream
from inference.wire import openai as openai_upstream
from inference.wire.openai import StreamEncoder, completion_body, parse_request

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)
name = st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True)
arguments = st.dictionaries(name, st.one_of(st.integers(), text), max_size=3)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": draw(text)}]
    for turn in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(text)})
        if draw(st.booleans()):
            calls = [
                {"id": f"call_{turn}_{i}", "type": "function",
                 "function": {"name": draw(name), "arguments": json.dumps(draw(arguments))}}
                for i in range(draw(st.integers(1, 2)))
            ]  # fmt: skip
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            for call in calls:
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": draw(text)})
        else:
            messages.append({"role": "assistant", "content": draw(text)})
    messages.append({"role": "user", "content": draw(text)})
    return messages


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": draw(conversations())}
    for key, strategy in {
        "temperature": st.floats(0, 1, allow_nan=False),
        "top_p": st.floats(0.01, 1, allow_nan=False),
        "max_tokens": st.integers(1, 4096),
        "stop": st.lists(text, min_size=1, max_size=3),
        "seed": st.integers(0, 2**31),
    }.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    if draw(st.booleans()):
        body["tools"] = [
            {"type": "function", "function": {"name": draw(name), "description": draw(text),
                                              "parameters": {"type": "object", "properties": {}}}}
        ]  # fmt: skip
        body["tool_choice"] = draw(st.sampled_from(["auto", "none", "required"]))
    return body


@settings(max_examples=60, deadline=None)
@given(requests())
def test_openai_request_survives_translation_to_openai(body: dict[str, Any]) -> None:
    chat, _ = parse_request(body)
    chat.raw = None  # force the translated path, not the passthrough
    out = openai_upstream.request_body(chat, "up", stream=False)
    assert out["model"] == "up"
    for key in ("temperature", "top_p", "max_tokens", "seed", "tools", "tool_choice"):
        assert out.get(key) == body.get(key)
    assert out.get("stop") == body.get("stop")
    assert out["messages"] == body["messages"]


@settings(max_examples=60, deadline=None)
@given(requests())
def test_openai_request_keeps_shared_fields_on_the_way_to_anthropic(body: dict[str, Any]) -> None:
    chat, _ = parse_request(body)
    out = anthropic_upstream.request_body(chat, "claude", stream=False)
    assert out["system"] == body["messages"][0]["content"]
    assert out.get("temperature") == body.get("temperature")
    assert out.get("top_p") == body.get("top_p")
    assert out.get("stop_sequences") == body.get("stop")
    assert out["max_tokens"] == body.get("max_tokens", anthropic_upstream.DEFAULT_MAX_TOKENS)
    sent_calls = [
        (b["id"], b["name"], b["input"])
        for m in out["messages"] for b in m["content"] if b["type"] == "tool_use"
    ]  # fmt: skip
    asked_calls = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for m in body["messages"] for c in m.get("tool_calls") or []
    ]  # fmt: skip
    assert sent_calls == asked_calls
    results = [
        b["tool_use_id"]
        for m in out["messages"]
        for b in m["content"]
        if b["type"] == "tool_result"
    ]
    assert results == [m["tool_call_id"] for m in body["messages"] if m["role"] == "tool"]
    roles = [m["role"] for m in out["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))  # turns alternate


@settings(max_examples=60, deadline=None)
@given(
    st.lists(text, max_size=4),
    st.lists(st.tuples(name, arguments), max_size=3),
    st.sampled_from(["stop", "length", "tool_calls"]),
    st.integers(0, 500),
    st.integers(0, 500),
)
def test_streamed_and_whole_answers_agree(
    texts: list[str], calls: list[tuple[str, dict[str, Any]]], reason: str, tin: int, tout: int
) -> None:
    events: list[Any] = [TextDelta(t) for t in texts]
    for i, (fn, args) in enumerate(calls):
        encoded = json.dumps(args)
        events.append(ToolCallDelta(i, f"call_{i}", fn, encoded[: len(encoded) // 2]))
        events.append(ToolCallDelta(i, arguments=encoded[len(encoded) // 2 :]))
    events.append(Finish(reason, Usage(tin, tout)))  # type: ignore[arg-type]
    builder = ResultBuilder("m")
    for event in events:
        builder.add(event)
    whole = completion_body(builder.result(), "m")

    encoder = StreamEncoder("m", include_usage=True)
    raw = b"".join(encoder.encode(e) for e in events).decode()
    chunks = [json.loads(line[6:]) for line in raw.split("\n") if line.startswith("data: {")]
    assert raw.rstrip().endswith("data: [DONE]")
    streamed_text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )
    arguments_by_index: dict[int, str] = {}
    for c in chunks:
        for choice in c["choices"]:
            for call in choice["delta"].get("tool_calls") or []:
                arguments_by_index[call["index"]] = (
                    arguments_by_index.get(call["index"], "") + call["function"]["arguments"]
                )
    message = whole["choices"][0]["message"]
    assert streamed_text == (message["content"] or "")
    whole_calls = {
        i: c["function"]["arguments"] for i, c in enumerate(message.get("tool_calls") or [])
    }
    assert arguments_by_index == whole_calls
    assert all(json.loads(v) is not None for v in arguments_by_index.values())
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == [whole["choices"][0]["finish_reason"]]
    assert chunks[-1]["usage"] == whole["usage"]
