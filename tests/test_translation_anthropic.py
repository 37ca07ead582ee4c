"""The client-facing Anthropic translation: wire <-> internal, as units and as properties."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import error_body
from inference import jsonio
from inference.base import ResultBuilder
from inference.errors import GatewayError, InvalidRequest, RateLimited, UnsupportedFeature
from inference.estimate import IMAGE_TOKENS, estimate_tokens
from inference.types import (
    ChatRequest,
    Event,
    Finish,
    ImagePart,
    Message,
    Reasoning,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    Usage,
    WireEvent,
)
from inference.wire import anthropic as wire
from inference.wire.anthropic import request_body

USER = [{"role": "user", "content": "Hello"}]


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": USER, **kw}


# ------------------------------------------------------------------ parse_request


def test_parse_maps_every_modelled_field() -> None:
    chat = wire.parse_request(
        body(
            system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            stop_sequences=["END"],
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stream=True,
            metadata={"user_id": "u-1"},
            tools=[{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
            tool_choice={"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        )
    )
    assert chat.source_protocol == "anthropic"
    assert [m.role for m in chat.messages] == ["system", "system", "user"]
    assert chat.messages[0].content == [TextPart("Be brief.")]
    assert chat.messages[1].content == [TextPart("Be kind.")]
    assert (chat.max_tokens, chat.temperature, chat.top_p, chat.top_k) == (10, 0.5, 0.9, 40)
    assert chat.stop == ["END"] and chat.stream
    assert chat.user == "u-1" and chat.metadata == {"user_id": "u-1"}
    assert chat.tools == [ToolSpec("f", "d", {"type": "object"})]
    assert chat.tool_choice is not None
    assert (chat.tool_choice.mode, chat.tool_choice.name) == ("tool", "f")
    assert chat.tool_choice.parallel is False
    assert chat.extensions == {}


def test_parse_blocks() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                {"type": "image",
                 "source": {"type": "base64", "media_type": "image/png", "data": "QQ=="}},
                {"type": "image", "source": {"type": "url", "url": "https://x.invalid/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, "é"]}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42",
                 "is_error": True},
                {"type": "tool_result", "tool_use_id": "toolu_2",
                 "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"type": "text", "text": "and?"},
            ],
        },
    ]  # fmt: skip
    chat = wire.parse_request(body(messages=messages))
    user, assistant, results = chat.messages
    assert user.content == [
        TextPart("look"),
        ImagePart(media_type="image/png", data="QQ=="),
        ImagePart(url="https://x.invalid/a.png"),
    ]
    # The redacted block has no internal form: dropped.
    assert assistant.content[0] == ThinkingPart("hmm", "sig")
    call = assistant.content[1]
    assert isinstance(call, ToolCallPart) and (call.id, call.name) == ("toolu_1", "f")
    assert json.loads(call.arguments) == {"a": [1, "é"]}
    assert results.role == "user"
    assert results.content == [
        ToolResultPart("toolu_1", [TextPart("42")], is_error=True),
        ToolResultPart("toolu_2", [TextPart("a"), TextPart("b")]),
        TextPart("and?"),
    ]


def test_system_string_and_unknown_fields() -> None:
    chat = wire.parse_request(
        body(
            system="Be brief.",
            thinking={"type": "enabled", "budget_tokens": 1024},
            service_tier="auto",
            container=None,
            context_management={"edits": []},
        )
    )
    assert chat.messages[0] == Message("system", [TextPart("Be brief.")])
    assert chat.reasoning == Reasoning(enabled=True, budget_tokens=1024)
    # Neutral values are the same as not asking; the rest must be honoured or refused.
    assert chat.extensions == {"context_management": {"edits": []}}
    disabled = wire.parse_request(body(thinking={"type": "disabled"}))
    assert disabled.extensions == {} and disabled.reasoning == Reasoning(enabled=False)


def test_blocks_and_tools_only_anthropic_can_take_are_kept_and_named() -> None:
    """Documents, file sources, server tools: passed through to Anthropic, refused elsewhere."""
    data = body(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "text", "data": "x"}},
                    {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
                    {"type": "text", "text": "Summarise."},
                ],
            }
        ],
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
        thinking={"type": "adaptive"},
    )
    chat = wire.parse_request(data)
    assert set(chat.extensions) == {
        "messages.0.content.0 (document block)", "messages.0.content.1.source (file image source)",
        "tools.0 (web_search_20250305 server tool)", "thinking (adaptive thinking)",
    }  # fmt: skip
    assert chat.tools == [] and chat.raw == data
    upstream = request_body(chat, "claude-x", stream=False)
    assert upstream == {**data, "model": "claude-x"}  # untouched for an Anthropic upstream
    from inference.wire.openai import request_body as openai_body

    with pytest.raises(UnsupportedFeature, match="document block") as refused:
        openai_body(chat, "gpt-x", stream=False)
    assert refused.value.param == "messages.0.content.0"


@pytest.mark.parametrize(
    ("choice", "mode", "name", "parallel"),
    [
        ({"type": "auto"}, "auto", None, True),
        ({"type": "any", "disable_parallel_tool_use": True}, "any", None, False),
        ({"type": "none"}, "none", None, True),
        ({"type": "tool", "name": "f"}, "tool", "f", True),
    ],
)
def test_tool_choice(choice: dict[str, Any], mode: str, name: str | None, parallel: bool) -> None:
    chat = wire.parse_request(body(tool_choice=choice))
    assert chat.tool_choice is not None
    assert (chat.tool_choice.mode, chat.tool_choice.name, chat.tool_choice.parallel) == (
        mode,
        name,
        parallel,
    )


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([1], "JSON object"),
        ({"model": "m", "messages": USER}, "max_tokens: Field required"),
        (body(max_tokens=0), "max_tokens"),
        (body(messages=[]), "messages"),
        (body(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
        (body(temperature=1.5), "temperature: Input should be less than or equal to 1"),
        (body(top_k=-1), "top_k"),
        (body(tool_choice={"type": "tool"}), "tool_choice.name"),
        (body(tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (body(system=[{"type": "text"}]), "system.0.text: Field required"),
        (body(tools=[{"name": "f"}]), "tools.0: Value error, input_schema is required"),
        (body(messages=[{"role": "user", "content": [{"type": ""}]}]),
         "messages.0.content.0.type"),
        (body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
         "messages.0.content.0.text: Field required"),
        (body(messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png"}}]}]),
         "messages.0.content.0.source.data: Field required"),
        (body(messages=[{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text"}]}]}]),
         "messages.0.content.0.content.0.text: Field required"),
        (body(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, 5]}]),
         "messages.0.content.1"),
    ],
)  # fmt: skip
def test_validation_errors_say_where(data: Any, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        wire.parse_request(data)
    assert fragment in info.value.message
    assert "Input should be a valid string" not in info.value.message


def test_count_request_ignores_generation_settings() -> None:
    chat = wire.parse_count_request(
        {"model": "m", "messages": USER, "max_tokens": 5, "temperature": 0, "system": "s"}
    )
    assert chat.extensions == {} and chat.max_tokens is None
    assert [m.role for m in chat.messages] == ["system", "user"]
    with pytest.raises(InvalidRequest):
        wire.parse_count_request({"model": "m"})


def test_estimate_tokens() -> None:
    chat = ChatRequest(
        model="m",
        messages=[
            Message("system", [TextPart("a" * 8)]),
            Message("user", [TextPart("b" * 3), ImagePart(url="u")]),
            Message("assistant", [ToolCallPart("t", "fn", '{"x":1}')]),
            Message("user", [ToolResultPart("t", [TextPart("c" * 5)])]),
        ],
        tools=[ToolSpec("fn", None, {})],
    )
    tool_json = '{"name":"fn","description":null,"input_schema":{}}'
    chars = 8 + 3 + 2 + 7 + 5 + len(tool_json)
    assert estimate_tokens(chat) == -(-chars // 4) + IMAGE_TOKENS


# ------------------------------------------------------------------ responses


def finish(reason: str = "stop", stop_sequence: str | None = None) -> Finish:
    return Finish(reason, Usage(11, 7), stop_sequence)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("stop_sequence", "stop_sequence"),
        ("content_filter", "refusal"),
    ],
)
def test_message_body_stop_reasons(reason: str, expected: str) -> None:
    builder = ResultBuilder("m")
    builder.add(TextDelta("hi"))
    builder.add(finish(reason, "END" if reason == "stop_sequence" else None))
    out = wire.message_body(builder.result(), "served")
    assert out["stop_reason"] == expected
    assert out["stop_sequence"] == ("END" if reason == "stop_sequence" else None)
    assert out["id"].startswith("msg_") and out["model"] == "served"
    assert (out["type"], out["role"]) == ("message", "assistant")
    assert out["usage"] == {
        "input_tokens": 11,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_message_body_blocks() -> None:
    builder = ResultBuilder("m")
    for event in [
        ThinkingDelta("why"),
        ThinkingDelta("", "sig"),
        TextDelta("Sure."),
        ToolCallDelta(0, "toolu_a", "f", '{"x": '),
        ToolCallDelta(0, arguments="1}"),
        ToolCallDelta(1, "toolu_b", "g", "[1]"),
        ToolCallDelta(2, "toolu_c", "h", "not json"),
        finish("tool_calls"),
    ]:
        builder.add(event)
    out = wire.message_body(builder.result("msg_upstream"), "m")
    assert out["id"] == "msg_upstream"
    assert out["content"] == [
        {"type": "thinking", "thinking": "why", "signature": "sig"},
        {"type": "text", "text": "Sure."},
        {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {"value": [1]}},
        {"type": "tool_use", "id": "toolu_c", "name": "h", "input": {"arguments": "not json"}},
    ]


HUGE = 123456789012345678901234567890  # beyond 64 bits: orjson alone refuses it


def test_huge_integers_in_tool_arguments_survive_both_ways() -> None:
    arguments = json.dumps({"id": HUGE})
    builder = ResultBuilder("m")
    for event in [ToolCallDelta(0, "toolu_a", "f", arguments), finish("tool_calls")]:
        builder.add(event)
    answer = jsonio.dumps(wire.message_body(builder.result(), "m"))
    assert json.loads(answer)["content"][0]["input"] == {"id": HUGE}
    # An OpenAI client's earlier tool call, sent on to an Anthropic upstream.
    history = [
        Message("user", [TextPart("go")]),
        Message("assistant", [ToolCallPart("call_1", "f", arguments)]),
        Message("tool", [ToolResultPart("call_1", [TextPart("done")])]),
    ]
    request = ChatRequest("m", history, max_tokens=5)
    upstream = jsonio.dumps(request_body(request, "m", stream=False))
    assert json.loads(upstream)["messages"][1]["content"][0]["input"] == {"id": HUGE}


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """SSE frames -> event payloads; each frame's `event:` must name its data's type."""
    events = []
    assert raw.endswith(b"\n\n")
    for frame in raw.decode().split("\n\n")[:-1]:
        name_line, data_line = frame.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[len("data: ") :])
        assert data["type"] == name_line[len("event: ") :]
        events.append(data)
    return events


def encode(events: list[Event], model: str = "m") -> list[dict[str, Any]]:
    encoder = wire.StreamEncoder(model)
    return parse_sse(b"".join(encoder.encode(e) for e in events))


def test_stream_text_sequence() -> None:
    out = encode([TextDelta("Hel"), TextDelta(""), TextDelta("lo"), finish("length")])
    assert [e["type"] for e in out] == [
        "message_start", "content_block_start", "ping", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    start = out[0]["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["model"] == "m"
    assert start["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert out[1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert out[4]["delta"] == {"type": "text_delta", "text": "lo"}
    assert out[6]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert out[6]["usage"] == {
        "input_tokens": 11,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_stream_blocks_split_by_kind_and_tool_call() -> None:
    out = encode(
        [
            ThinkingDelta("a"),
            ThinkingDelta("", "sig"),
            TextDelta("b"),
            ToolCallDelta(0, "toolu_1", "f", ""),
            ToolCallDelta(0, arguments='{"x":1}'),
            ToolCallDelta(1, "toolu_2", "g", "{}"),
            finish("tool_calls"),
        ]
    )
    starts = [(e["index"], e["content_block"]) for e in out if e["type"] == "content_block_start"]
    assert starts == [
        (0, {"type": "thinking", "thinking": "", "signature": ""}),
        (1, {"type": "text", "text": ""}),
        (2, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
        (3, {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}}),
    ]
    deltas = [(e["index"], e["delta"]) for e in out if e["type"] == "content_block_delta"]
    assert deltas == [
        (0, {"type": "thinking_delta", "thinking": "a"}),
        (0, {"type": "signature_delta", "signature": "sig"}),
        (1, {"type": "text_delta", "text": "b"}),
        (2, {"type": "input_json_delta", "partial_json": '{"x":1}'}),
        (3, {"type": "input_json_delta", "partial_json": "{}"}),
    ]
    stops = [e["index"] for e in out if e["type"] == "content_block_stop"]
    assert stops == [0, 1, 2, 3]
    assert [e["type"] for e in out].count("ping") == 1


def test_stream_without_content_and_stop_sequence() -> None:
    out = encode([finish("stop_sequence", "END")])
    assert [e["type"] for e in out] == ["message_start", "ping", "message_delta", "message_stop"]
    assert out[0]["message"]["usage"]["input_tokens"] == 11
    assert out[2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def in_band(error: GatewayError) -> dict[str, Any]:
    """An error's Anthropic envelope, as the gateway hands it to the encoder."""
    return error_body(error, "anthropic")


def test_stream_error_event() -> None:
    encoder = wire.StreamEncoder("m")
    encoder.encode(TextDelta("x"))
    raw = encoder.error(in_band(RateLimited("slow down")))
    assert raw.startswith(b"event: error\ndata: ")
    assert parse_sse(raw) == [
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    ]


def test_anthropic_upstream_is_relayed_untouched() -> None:
    builder = ResultBuilder("m")
    builder.add(TextDelta("hi"))
    builder.add(finish())
    result = builder.result("msg_1")
    result.raw, result.raw_protocol = {"id": "msg_1", "anything": True}, "anthropic"
    assert wire.message_body(result, "m") == {"id": "msg_1", "anything": True}
    result.raw_protocol = "openai"  # another protocol's body is rendered, not relayed
    assert wire.message_body(result, "m")["content"] == [{"type": "text", "text": "hi"}]

    encoder = wire.StreamEncoder("m")
    start = b'event: message_start\ndata: {"type":"message_start"}\n\n'
    assert encoder.encode(WireEvent("anthropic", start)) == start
    assert encoder.encode(TextDelta("derived from it")) == b""
    stop = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert encoder.encode(WireEvent("anthropic", stop)) == stop
    assert encoder.encode(finish()) == b""
    assert encoder.error(in_band(RateLimited("x"))).startswith(b"event: error")
    upstream_error = b'event: error\ndata: {"type":"error"}\n\n'
    assert encoder.encode(WireEvent("anthropic", upstream_error)) == upstream_error
    assert encoder.error(in_band(RateLimited("x"))) == b""  # said once, by the upstream

    # An upstream stream that ended without message_stop still ends properly.
    encoder = wire.StreamEncoder("m")
    encoder.encode(WireEvent("anthropic", start))
    assert parse_sse(encoder.encode(finish())) == [{"type": "message_stop"}]

    encoder = wire.StreamEncoder("m")
    assert encoder.encode(WireEvent("openai", b"data: {}\n\n")) == b""
    assert encoder.encode(TextDelta("x")).startswith(b"event: message_start")


# ------------------------------------------------------------------ properties

texts = st.text(max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
json_objects = st.dictionaries(texts, json_values, max_size=4)
ids = st.from_regex(r"toolu_[a-z0-9]{1,8}", fullmatch=True)
text_block = st.builds(lambda t: {"type": "text", "text": t}, texts)
image_block = st.one_of(
    st.builds(
        lambda m, d: {"type": "image", "source": {"type": "base64", "media_type": m, "data": d}},
        st.sampled_from(["image/png", "image/jpeg"]),
        st.from_regex(r"[A-Za-z0-9+/]{0,12}", fullmatch=True),
    ),
    st.builds(
        lambda u: {"type": "image", "source": {"type": "url", "url": u}},
        st.from_regex(r"https://x\.invalid/[a-z]{1,6}\.png", fullmatch=True),
    ),
)
tool_result_block = st.builds(
    lambda i, c, e: {
        "type": "tool_result",
        "tool_use_id": i,
        **({} if c is None else {"content": c}),
        **({} if e is None else {"is_error": e}),
    },
    ids,
    st.none() | texts | st.lists(text_block | image_block, max_size=3),
    st.none() | st.booleans(),
)
tool_use_block = st.builds(
    lambda i, n, x: {"type": "tool_use", "id": i, "name": n, "input": x},
    ids,
    st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
    json_objects,
)
thinking_block = st.builds(
    lambda t, s: {"type": "thinking", "thinking": t, "signature": s},
    texts,
    st.from_regex(r"[A-Za-z0-9]{1,10}", fullmatch=True),
)
user_message = st.builds(
    lambda c: {"role": "user", "content": c},
    texts | st.lists(text_block | image_block | tool_result_block, min_size=1, max_size=4),
)
assistant_message = st.builds(
    lambda c: {"role": "assistant", "content": c},
    texts | st.lists(thinking_block | text_block | tool_use_block, min_size=1, max_size=4),
)
tool_defs = st.lists(
    st.builds(
        lambda n, d, s: {"name": n, **({} if d is None else {"description": d}), "input_schema": s},
        st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
        st.none() | texts,
        st.fixed_dictionaries({"type": st.just("object")}, optional={"properties": json_objects}),
    ),
    max_size=3,
)
tool_choices = st.none() | st.builds(
    lambda t, n, p: {
        "type": t,
        **({"name": n} if t == "tool" else {}),
        **({} if p is None else {"disable_parallel_tool_use": p}),
    },
    st.sampled_from(["auto", "any", "tool", "none"]),
    st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
    st.none() | st.booleans(),
)
optional = {
    "system": texts | st.lists(text_block, max_size=3),
    "stop_sequences": st.lists(st.text(min_size=1, max_size=5), max_size=3),
    "temperature": st.floats(0, 1),
    "top_p": st.floats(0, 1),
    "top_k": st.integers(0, 500),
    "tools": tool_defs,
    "tool_choice": tool_choices,
    "metadata": st.builds(lambda u: {"user_id": u}, texts),
    "thinking": st.just({"type": "enabled", "budget_tokens": 1024}),
}
requests = st.fixed_dictionaries(
    {
        "model": st.just("client-model"),
        "max_tokens": st.integers(1, 100_000),
        "messages": st.lists(user_message | assistant_message, min_size=1, max_size=5),
    },
    optional=optional,  # type: ignore[arg-type]
)


def expected_upstream(data: dict[str, Any]) -> dict[str, Any]:
    """What an Anthropic upstream must receive for a client's request: the same
    request, up to equivalent spellings (a string content is one text block...)."""
    out: dict[str, Any] = {"model": "upstream-model", "max_tokens": data["max_tokens"]}
    system = data.get("system")
    if isinstance(system, str):
        out["system"] = system
    elif system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    messages: list[dict[str, Any]] = []
    for message in data["messages"]:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        blocks = [b for b in (normal_block(b) for b in blocks) if b is not None]
        if not blocks:
            continue
        if messages and messages[-1]["role"] == message["role"]:
            messages[-1]["content"] += blocks  # turns must alternate upstream
        else:
            messages.append({"role": message["role"], "content": blocks})
    out["messages"] = messages
    for key in ("temperature", "top_p", "top_k"):
        if key in data:
            out[key] = data[key]
    if data.get("stop_sequences"):
        out["stop_sequences"] = data["stop_sequences"]
    if data.get("tools"):
        out["tools"] = [
            {k: v for k, v in t.items() if v or k != "description"} for t in data["tools"]
        ]
    choice = data.get("tool_choice")
    if choice is not None and (data.get("tools") or choice["type"] == "none"):
        out["tool_choice"] = {
            k: v for k, v in choice.items() if k != "disable_parallel_tool_use" or v
        }
        if choice["type"] == "none":
            out["tool_choice"].pop("disable_parallel_tool_use", None)
    if "metadata" in data:
        out["metadata"] = data["metadata"]
    if "thinking" in data:
        out["thinking"] = data["thinking"]
    return out


def normal_block(block: dict[str, Any]) -> dict[str, Any] | None:
    """The block as the internal form sends it on; None: not sent (empty text,
    which Anthropic refuses)."""
    if block["type"] == "text" and not block["text"]:
        return None
    if block["type"] != "tool_result":
        return block
    content = block.get("content")
    out = {"type": "tool_result", "tool_use_id": block["tool_use_id"]}
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
    blocks = [b for b in (normal_block(b) for b in blocks) if b is not None]
    if blocks:
        out["content"] = blocks
    if block.get("is_error"):
        out["is_error"] = True
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_request_survives_the_trip_to_an_anthropic_upstream(data: dict[str, Any]) -> None:
    chat = wire.parse_request(data)
    # Same protocol: the client's body goes on untouched but for the model name.
    assert request_body(chat, "upstream-model", stream=False) == {**data, "model": "upstream-model"}
    # Through the internal form (what any other upstream is built from), every
    # shared field survives.
    translated = request_body(replace(chat, raw=None), "upstream-model", stream=False)
    assert translated == expected_upstream(data)


def tool_call_events(index: int, call_id: str, name: str, arguments: str, cuts: list[int]) -> list:
    bounds = sorted({0, len(arguments), *(c % (len(arguments) + 1) for c in cuts)})
    pieces = [arguments[a:b] for a, b in itertools.pairwise(bounds)]
    return [ToolCallDelta(index, call_id, name, "")] + [
        ToolCallDelta(index, arguments=p) for p in pieces
    ]


segment = st.one_of(
    st.builds(lambda ps: ("text", ps), st.lists(st.text(max_size=6), min_size=1, max_size=4)),
    st.builds(
        lambda ps, s: ("thinking", ps, s),
        st.lists(st.text(max_size=6), min_size=1, max_size=3),
        st.none() | st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True),
    ),
    st.builds(
        lambda n, x, c: ("tool", n, x, c),
        st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
        json_objects,
        st.lists(st.integers(0, 1000), max_size=4),
    ),
)
finishes = st.builds(
    lambda r, i, o, s: Finish(r, Usage(i, o), s if r == "stop_sequence" else None),
    st.sampled_from(["stop", "length", "tool_calls", "stop_sequence", "content_filter"]),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.text(min_size=1, max_size=4),
)


def events_of(segments: list[tuple[Any, ...]], end: Finish) -> list[Event]:
    events: list[Event] = []
    tools = 0
    for seg in segments:
        if seg[0] == "text":
            events.extend(TextDelta(p) for p in seg[1])
        elif seg[0] == "thinking":
            events.extend(ThinkingDelta(p) for p in seg[1])
            if seg[2]:
                events.append(ThinkingDelta("", seg[2]))
        else:
            arguments = json.dumps(seg[2], ensure_ascii=False)
            events.extend(tool_call_events(tools, f"toolu_{tools}", seg[1], arguments, seg[3]))
            tools += 1
    return [*events, end]


def fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Anthropic's stream events -> the message, checking the order rules on the way."""
    assert events[0]["type"] == "message_start"
    assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]
    assert [e["type"] for e in events].count("ping") == 1
    message = events[0]["message"]
    content: list[dict[str, Any]] = []
    partial: dict[int, str] = {}
    open_index: int | None = None
    for event in events[1:-2]:
        kind = event["type"]
        if kind == "content_block_start":
            assert open_index is None and event["index"] == len(content)
            open_index = event["index"]
            content.append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            assert event["index"] == open_index
            block, delta = content[event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif kind == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
        else:
            assert kind == "ping"
    assert open_index is None
    for index, text in partial.items():
        content[index]["input"] = json.loads(text)
    delta = events[-2]
    return {**message, **delta["delta"], "content": content, "usage": delta["usage"]}


@settings(max_examples=300, deadline=None)
@given(st.lists(segment, max_size=6), finishes)
def test_streamed_and_whole_answers_agree(segments: list[tuple[Any, ...]], end: Finish) -> None:
    events = events_of(segments, end)
    builder = ResultBuilder("m")
    for event in events:
        builder.add(event)
    whole = wire.message_body(builder.result(), "served")
    encoder = wire.StreamEncoder("served")
    raw = b"".join(encoder.encode(e) for e in events)
    streamed = fold(parse_sse(raw))
    for key in ("type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"):
        assert streamed[key] == whole[key], key
    for block in whole["content"]:
        if block["type"] == "tool_use":
            assert isinstance(block["input"], dict)
    # The official SDK's own fold agrees too.
    snapshot = None
    bufs: dict[int, bytes] = {}
    for payload in parse_sse(raw):
        snapshot = accumulate_event(
            event=payload,  # type: ignore[arg-type]
            current_snapshot=snapshot,
            json_bufs=bufs,
        )
    assert snapshot is not None
    sdk = json.loads(snapshot.to_json())  # orjson would turn huge integers into floats
    assert sdk["content"] == whole["content"]
    assert sdk["stop_reason"] == whole["stop_reason"]
    assert sdk["usage"]["input_tokens"] == whole["usage"]["input_tokens"]
    assert sdk["usage"]["output_tokens"] == whole["usage"]["output_tokens"]
