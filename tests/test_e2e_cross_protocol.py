"""OpenAI clients against an Anthropic upstream: tools across turns, streamed and not.

(The Anthropic-client directions are in test_e2e_anthropic.py.)
"""

from __future__ import annotations

import json

import openai
import pytest

from fake_upstream import FakeUpstream

from .conftest import LiveServer
from .test_e2e_failover import UPSTREAM_KEYS, gateway  # noqa: F401  (its gateway, its keys)

pytestmark = pytest.mark.e2e

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
ASK = [
    {"role": "system", "content": "first system"},
    {"role": "system", "content": "second system"},
    {
        "role": "user",
        "content": [{"type": "text", "text": "weather"}, {"type": "text", "text": "in Oslo?"}],
    },
]


@pytest.fixture
def sdk(gateway: LiveServer, upstream: FakeUpstream) -> openai.OpenAI:  # noqa: F811
    upstream.reset()
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=30)


def test_tool_call_and_result_round_trip(sdk: openai.OpenAI, upstream: FakeUpstream) -> None:
    first = sdk.chat.completions.create(
        model="claude-direct", messages=ASK, tools=[WEATHER], max_tokens=50, temperature=0.5,
        top_p=0.9, stop=["END"],
    )  # fmt: skip
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert "city" in arguments

    sent = upstream.find(model="claude-ok")[0].json
    assert sent["system"] == [
        {"type": "text", "text": "first system"},
        {"type": "text", "text": "second system"},
    ]
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "weather"},
        {"type": "text", "text": "in Oslo?"},
    ]
    assert sent["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (50, 0.5, 0.9)
    assert sent["stop_sequences"] == ["END"]

    follow_up = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    second = sdk.chat.completions.create(
        model="claude-direct", messages=follow_up, tools=[WEATHER], max_tokens=50
    )
    assert second.choices[0].finish_reason in {"stop", "length"}
    assert "sunny, 21C" in (second.choices[0].message.content or "")
    turns = upstream.find(model="claude-ok")[1].json["messages"]
    assert turns[1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": call.id, "name": "get_weather", "input": arguments}],
    }
    assert turns[2]["content"][0]["type"] == "tool_result"
    assert turns[2]["content"][0]["tool_use_id"] == call.id


def test_streamed_tool_call_arguments_concatenate_to_json(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="claude-direct", messages=ASK, tools=[WEATHER], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    pieces: dict[int, str] = {}
    names: dict[int, str] = {}
    finish = None
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                pieces[call.index] = pieces.get(call.index, "") + (call.function.arguments or "")
                if call.function.name:
                    names[call.index] = call.function.name
    assert finish == "tool_calls"
    assert names == {0: "get_weather"}
    assert "city" in json.loads(pieces[0])
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_streamed_and_whole_answers_agree(sdk: openai.OpenAI) -> None:
    whole = sdk.chat.completions.create(model="claude-direct", messages=ASK, max_tokens=12)
    streamed = sdk.chat.completions.create(
        model="claude-direct", messages=ASK, max_tokens=12, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == whole.choices[0].message.content
    assert whole.choices[0].finish_reason == "length"


def test_images_pass_as_data_and_as_urls(sdk: openai.OpenAI, upstream: FakeUpstream) -> None:
    content = [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://images.example.invalid/cat.png"}},
    ]
    sdk.chat.completions.create(
        model="claude-direct", messages=[{"role": "user", "content": content}], max_tokens=5
    )
    blocks = upstream.find(model="claude-ok")[0].json["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/AAAA"},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://images.example.invalid/cat.png"},
    }


CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}
BOTH = [{"role": "user", "content": "use all tools for Oslo"}]


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_calls_keep_their_indices(
    sdk: openai.OpenAI,
    upstream: FakeUpstream,
    stream: bool,
) -> None:
    """Two tool_use blocks upstream -> two OpenAI tool calls, 0 and 1, args valid JSON."""
    calls: dict[int, dict[str, str]] = {}
    if stream:
        for chunk in sdk.chat.completions.create(
            model="claude-direct", messages=BOTH, tools=[WEATHER, CLOCK], stream=True
        ):
            for choice in chunk.choices:
                for delta in choice.delta.tool_calls or []:
                    call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] += delta.id or ""
                    call["name"] += (delta.function and delta.function.name) or ""
                    call["arguments"] += (delta.function and delta.function.arguments) or ""
    else:
        reply = sdk.chat.completions.create(
            model="claude-direct", messages=BOTH, tools=[WEATHER, CLOCK]
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        for i, tool_call in enumerate(reply.choices[0].message.tool_calls or []):
            calls[i] = {
                "id": tool_call.id,
                "name": tool_call.function.name,
                "arguments": tool_call.function.arguments,
            }
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert len({c["id"] for c in calls.values()}) == 2
    assert json.loads(calls[0]["arguments"])["city"]
    assert "zone" in json.loads(calls[1]["arguments"])

    # Both results go back in one user turn, each answering its own call.
    follow_up = [
        *BOTH,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls.values()
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "noon"},
    ]  # fmt: skip
    sdk.chat.completions.create(model="claude-direct", messages=follow_up, tools=[WEATHER, CLOCK])
    turns = upstream.find(model="claude-ok")[-1].json["messages"]
    assert [b["type"] for b in turns[1]["content"]] == ["tool_use", "tool_use"]  # no empty text
    assert [(b["type"], b["tool_use_id"]) for b in turns[2]["content"]] == [
        ("tool_result", calls[0]["id"]),
        ("tool_result", calls[1]["id"]),
    ]


def test_parallel_calls_can_be_turned_off(sdk: openai.OpenAI, upstream: FakeUpstream) -> None:
    reply = sdk.chat.completions.create(
        model="claude-direct", messages=BOTH, tools=[WEATHER, CLOCK], parallel_tool_calls=False
    )
    assert len(reply.choices[0].message.tool_calls or []) == 1
    sent = upstream.find(model="claude-ok")[-1].json
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_reasoning_effort_becomes_a_thinking_budget(
    sdk: openai.OpenAI,
    upstream: FakeUpstream,
) -> None:
    sdk.chat.completions.create(
        model="claude-direct", messages=BOTH, max_completion_tokens=20000, reasoning_effort="low"
    )
    sent = upstream.find(model="claude-ok")[-1].json
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["max_tokens"] == 20000
