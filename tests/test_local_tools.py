"""Local models: tools through the chat template, tool calls parsed from the output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.errors import UnsupportedFeature
from inference.local.backend import LocalBackend
from inference.local.engine import Engine
from inference.local.model import ModelSpec, load_model
from inference.local.output import OutputParser
from inference.types import (
    ChatRequest,
    Message,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
)

WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}},
)
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER.parameters}}
]


@pytest.fixture(scope="module")
def tokenizer(demo_model_path: Path):
    return load_model(ModelSpec("demo", str(demo_model_path))).tokenizer


def run(parser: OutputParser, text: str, size: int = 3) -> list[object]:
    events: list[object] = []
    for i in range(0, len(text), size):
        events.extend(parser.feed(text[i : i + size]))
    events.extend(parser.finish())
    return events


def test_tool_calls_are_parsed_across_chunk_boundaries(tokenizer) -> None:
    text = (
        'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        '</tool_call><tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}'
        "\n</tool_call>"
    )
    parser = OutputParser(tokenizer, tools=TOOLS, prompt=[1])
    events = run(parser, text)
    texts = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert texts == "Let me check. "
    assert [(c.index, c.name, json.loads(c.arguments)) for c in calls] == [
        (0, "get_weather", {"city": "Paris"}),
        (1, "get_weather", {"city": "Oslo"}),
    ]
    assert all(c.id and c.id.startswith("call_") for c in calls)
    assert parser.tool_calls == 2


def test_unparseable_tool_text_is_kept_as_text(tokenizer) -> None:
    events = run(
        OutputParser(tokenizer, tools=TOOLS, prompt=[1]), "a<tool_call>not json</tool_call>b"
    )
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "anot jsonb"


def test_without_tools_markers_are_plain_text(tokenizer) -> None:
    events = run(OutputParser(tokenizer, tools=None, prompt=[1]), "x<tool_call>{}</tool_call>")
    assert not any(isinstance(e, ToolCallDelta) for e in events)


def test_thinking_is_separated(tokenizer) -> None:
    events = run(OutputParser(tokenizer, tools=None, prompt=[1]), "<think>plan it</think>Answer")
    assert "".join(e.text for e in events if isinstance(e, ThinkingDelta)) == "plan it"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Answer"


async def test_tools_and_tool_results_reach_the_chat_template(demo_model_path: Path) -> None:
    engine = Engine()
    backend = LocalBackend(engine, ModelSpec("demo", str(demo_model_path)))
    try:
        plain = ChatRequest("demo", [Message("user", [TextPart("Weather in Paris?")])])
        with_tools = ChatRequest("demo", plain.messages, tools=[WEATHER])
        assert await backend.count_tokens(with_tools) > await backend.count_tokens(plain) + 10
        turn = ChatRequest(
            "demo",
            [
                *plain.messages,
                Message("assistant", [ToolCallPart("call_1", "get_weather", '{"city": "Paris"}')]),
                Message("user", [ToolResultPart("call_1", [TextPart("sunny, 21C")])]),
            ],
            tools=[WEATHER],
        )
        async with engine.lease(backend.spec) as model:
            prompt = await backend.prompt_tokens(model, turn)
            rendered = model.tokenizer.decode(prompt)
        assert "<tool_response>" in rendered and "sunny, 21C" in rendered
        assert '"city": "Paris"' in rendered
        forced = ChatRequest("demo", plain.messages, tools=[WEATHER], tool_choice=ToolChoice("any"))
        with pytest.raises(UnsupportedFeature):
            await backend.complete(forced)
    finally:
        engine.close()


class ScriptedEngine(Engine):
    """The real engine (real loading, leases), with the decoding replaced by a script:
    random weights cannot be made to call a tool, and this test is about what the
    backend makes of a model that does."""

    def __init__(self, script: list[str]) -> None:
        super().__init__()
        self.script = script

    async def generate(self, model, prompt, params):  # type: ignore[no-untyped-def,override]
        from inference.local.engine import Chunk

        for i, text in enumerate(self.script):
            last = i == len(self.script) - 1
            yield Chunk(text, i + 1, finish_reason="stop" if last else None)


TWO_CALLS = [
    "Checking. <tool_",
    'call>\n{"name": "get_weather", "arguments": {"city": "Pa',
    'ris"}}\n</tool_call><tool_call>\n{"name": "get_weather", ',
    '"arguments": {"city": "Oslo"}}\n</tool_call>',
]


async def test_a_local_models_tool_calls_are_real_calls_in_both_protocols(
    demo_model_path: Path,
) -> None:
    from inference.base import collect
    from inference.wire import anthropic as anthropic_wire
    from inference.wire import openai as openai_wire

    engine = ScriptedEngine(TWO_CALLS)
    backend = LocalBackend(engine, ModelSpec("demo", str(demo_model_path)))
    ask = ChatRequest("demo", [Message("user", [TextPart("Weather?")])], tools=[WEATHER])
    try:
        events = [e async for e in backend.stream(ask)]
        whole = await collect("demo", backend.stream(ask))
    finally:
        engine.close()
    assert whole.finish.reason == "tool_calls"
    body = anthropic_wire.message_body(whole, "demo")
    assert body["stop_reason"] == "tool_use"
    assert [(b["type"], b.get("input")) for b in body["content"]] == [
        ("text", None),
        ("tool_use", {"city": "Paris"}),
        ("tool_use", {"city": "Oslo"}),
    ]
    completion = openai_wire.completion_body(whole, "demo")
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [json.loads(c["function"]["arguments"]) for c in choice["message"]["tool_calls"]] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]
    # Streamed, to an OpenAI client: tool call deltas at indices 0 and 1.
    encoder = openai_wire.StreamEncoder("demo", include_usage=False)
    lines = b"".join(encoder.encode(e) for e in events).decode().split("\n\n")
    chunks = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    indices = [t["index"] for d in deltas for t in d.get("tool_calls", [])]
    assert indices == [0, 1]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # And to an Anthropic client: one tool_use block each.
    anthropic = anthropic_wire.StreamEncoder("demo")
    frames = b"".join(anthropic.encode(e) for e in events).decode()
    assert frames.count('"type":"tool_use"') == 2 and '"stop_reason":"tool_use"' in frames
