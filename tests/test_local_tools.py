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
