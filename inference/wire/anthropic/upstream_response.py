"""An Anthropic provider's answer -> the internal result: a whole `message`
(`result_of`), or its stream of named events one by one (`StreamDecoder`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ...base import ResultBuilder
from ...types import (
    ChatResult,
    Event,
    Finish,
    FinishReason,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
)
from ..common import MalformedResponse, StreamEnd

# Anthropic stop_reason -> internal finish reason (pause_turn: the turn ended).
STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop_sequence",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


def usage_of(data: dict[str, Any] | None) -> Usage:
    data = data or {}
    cached = int(data.get("cache_creation_input_tokens") or 0) + int(
        data.get("cache_read_input_tokens") or 0
    )
    return Usage(
        input_tokens=int(data.get("input_tokens") or 0) + cached,
        output_tokens=int(data.get("output_tokens") or 0),
        # Read from the cache; what was written to it is billed as input.
        cached_tokens=int(data.get("cache_read_input_tokens") or 0),
    )


def result_of(data: dict[str, Any]) -> ChatResult:
    """A `message` body; MalformedResponse when it has no content in it."""
    content = data.get("content")
    if data.get("type") == "error" or not isinstance(content, list):
        raise MalformedResponse("no content in the response")
    builder = ResultBuilder(str(data.get("model") or ""))
    tools = 0
    for block in content:
        kind = block.get("type")
        if kind == "text":
            builder.add(TextDelta(block.get("text") or ""))
        elif kind == "thinking":
            builder.add(ThinkingDelta(block.get("thinking") or "", block.get("signature")))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            builder.add(ToolCallDelta(tools, block.get("id"), block.get("name"), arguments))
            tools += 1
    reason = STOP_REASONS.get(data.get("stop_reason") or "end_turn", "stop")
    builder.add(
        Finish(
            reason=reason,
            usage=usage_of(data.get("usage")),
            stop_sequence=data.get("stop_sequence"),
        )
    )
    return builder.result(data.get("id"))


class StreamDecoder(StreamEnd):
    """Anthropic's stream events, one parsed event at a time -> internal events.

    The stop reason and usage (message_start's input, message_delta's output)
    are kept for the Finish at the end. Reading the events, relaying them, and
    what an error event or a truncated stream means, is the cloud client's.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tool_index: dict[int, int] = {}  # content block index -> tool call index

    def decode(self, kind: str | None, data: dict[str, Any]) -> Iterator[Event]:
        """`kind`: the event's type (its data's `type`, or else its SSE name)."""
        if kind == "message_start":
            self.usage = usage_of((data.get("message") or {}).get("usage"))
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                tools = self._tool_index
                index = tools.setdefault(int(data.get("index", 0)), len(tools))
                yield ToolCallDelta(index, block.get("id"), block.get("name"), "")
            elif block.get("type") == "text" and block.get("text"):
                yield TextDelta(block["text"])
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                yield TextDelta(delta.get("text") or "")
            elif dtype == "thinking_delta":
                yield ThinkingDelta(delta.get("thinking") or "")
            elif dtype == "signature_delta":
                yield ThinkingDelta("", delta.get("signature"))
            elif dtype == "input_json_delta":
                index = self._tool_index.get(int(data.get("index", 0)), 0)
                yield ToolCallDelta(index, arguments=delta.get("partial_json") or "")
        elif kind == "message_delta":
            delta = data.get("delta") or {}
            self.reason = STOP_REASONS.get(delta.get("stop_reason") or "end_turn", "stop")
            self.stop_sequence = delta.get("stop_sequence")
            out = usage_of(data.get("usage"))
            self.usage = Usage(
                self.usage.input_tokens or out.input_tokens,
                out.output_tokens,
                self.usage.cached_tokens or out.cached_tokens,
            )
