"""The OpenAI request schema and its translation to the internal form."""

from __future__ import annotations

from typing import Any

import pytest

from inference.errors import InvalidRequest
from inference.types import ImagePart, TextPart, ThinkingPart, ToolCallPart, ToolResultPart
from inference.wire.openai import parse_request

BAD_IMAGE = {"type": "image_url", "image_url": {"url": "data:x"}}


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_defaults_stay_unset() -> None:
    request, include_usage = parse_request(body())
    assert (request.temperature, request.top_p, request.max_tokens, request.seed) == (None,) * 4
    assert request.stop == [] and not request.stream and not include_usage
    assert request.source_protocol == "openai" and request.extensions == {}


def test_temperature_zero_is_kept() -> None:
    assert parse_request(body(temperature=0))[0].temperature == 0


def test_max_completion_tokens_wins_and_stop_string_becomes_a_list() -> None:
    request, _ = parse_request(body(max_tokens=5, max_completion_tokens=9, stop="END"))
    assert request.max_tokens == 9 and request.stop == ["END"]
    assert parse_request(body(stop=["a", "b"]))[0].stop == ["a", "b"]


def test_stream_options_and_user() -> None:
    request, include_usage = parse_request(
        body(stream=True, stream_options={"include_usage": True}, user="u1", seed=3)
    )
    assert request.stream and include_usage and request.user == "u1" and request.seed == 3


def test_messages_roles_and_parts() -> None:
    request, _ = parse_request(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "system", "content": [{"type": "text", "text": "two"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}},
                ]},
                {"role": "assistant", "content": None, "reasoning_content": "hmm", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "c2", "type": "function",
                     "function": {"name": "g", "arguments": "{\"a\":1}"}},
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "r1"},
            ],
        }
    )  # fmt: skip
    roles = [m.role for m in request.messages]
    assert roles == ["system", "system", "user", "assistant", "tool"]
    image_data, image_url = request.messages[2].content[1:]
    assert isinstance(image_data, ImagePart) and image_data.media_type == "image/png"
    assert image_data.data == "AAAA"
    assert isinstance(image_url, ImagePart) and image_url.url == "https://example.invalid/x.png"
    assistant = request.messages[3].content
    assert isinstance(assistant[0], ThinkingPart)
    assert [c.name for c in assistant if isinstance(c, ToolCallPart)] == ["f", "g"]
    result = request.messages[4].content[0]
    assert isinstance(result, ToolResultPart) and result.tool_call_id == "c1"
    assert result.content == [TextPart("r1")]


def test_tools_and_tool_choice() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    request, _ = parse_request(body(tools=tools, tool_choice="required", parallel_tool_calls=False))
    assert request.tools[0].name == "f"
    assert request.tool_choice is not None
    assert (request.tool_choice.mode, request.tool_choice.parallel) == ("any", False)
    named = parse_request(
        body(tools=tools, tool_choice={"type": "function", "function": {"name": "f"}})
    )
    assert named[0].tool_choice.mode == "tool" and named[0].tool_choice.name == "f"  # type: ignore[union-attr]


def test_unknown_fields_are_extensions_unless_neutral() -> None:
    request, _ = parse_request(
        body(logprobs=True, presence_penalty=0, response_format={"type": "json_object"})
    )
    assert set(request.extensions) == {"logprobs", "response_format"}
    assert parse_request(body(logprobs=False, store=False))[0].extensions == {}


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ([], None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (body(n=3), "n"),
        (body(temperature=-1), "temperature"),
        (body(top_p=-0.1), "top_p"),
        (body(top_p=1.5), "top_p"),
        (body(seed=2**63), "seed"),
        (body(reasoning_effort="enormous"), "reasoning_effort"),
        (body(messages=[{"role": "tool", "content": "x"}]), "messages.0.tool_call_id"),
        (body(messages=[{"role": "user", "content": [BAD_IMAGE]}]), "messages.0.content.0"),
        (body(tool_choice="sometimes"), "tool_choice"),
    ],
)  # fmt: skip
def test_invalid_requests(data: Any, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request(data)
    assert info.value.param == param
    assert info.value.message
