"""The internal answer -> an OpenAI client's chat.completion body, or its stream
of chat.completion.chunk `data:` lines."""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar, Literal

import orjson

from ... import jsonio
from ...types import (
    ChatResult,
    Continued,
    Event,
    Finish,
    PromptUsage,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCallDelta,
    ToolCallPart,
    Usage,
    WireEvent,
)

FINISH_REASONS = {
    "stop": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
}


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def completion_body(result: ChatResult, model: str) -> dict[str, Any]:
    if result.raw is not None and result.raw_protocol == "openai":
        return result.raw  # an OpenAI upstream's answer, untouched
    text = "".join(p.text for p in result.content if isinstance(p, TextPart))
    reasoning = "".join(p.text for p in result.content if isinstance(p, ThinkingPart))
    calls = [p for p in result.content if isinstance(p, ToolCallPart)]
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    message.setdefault("refusal", None)
    return {
        "id": result.id or new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS[result.finish.reason],
            }
        ],
        "usage": usage_body(result.finish.usage),
        "system_fingerprint": None,
    }


class StreamEncoder:
    """Internal events -> `data:` lines of chat.completion.chunk objects."""

    protocol: ClassVar[Literal["openai"]] = "openai"

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = new_id()
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self._started = False
        # Set once the backend relays an OpenAI upstream: its bytes go out as
        # they came, and the events derived from them are not sent twice.
        self._passthrough = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            body["usage"] = None
        return b"data: " + jsonio.dumps(body) + b"\n\n"

    def encode(self, event: Event) -> bytes:
        if isinstance(event, WireEvent):
            if event.protocol != "openai":
                return b""
            if not self._passthrough:
                self._passthrough = True
                self._adopt(event.data)
            return event.data
        if isinstance(event, Continued):
            # Another target finishes the answer: framed here from now on, as
            # chunks of the same completion the client already has.
            self._passthrough = False
            return b""
        if self._passthrough:
            self._started = True
            return b""
        out = b""
        if not self._started:
            self._started = True
            out = self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, PromptUsage):
            return out
        if isinstance(event, TextDelta):
            return out + self._chunk({"content": event.text})
        if isinstance(event, ThinkingDelta):
            return out + self._chunk({"reasoning_content": event.text})
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index}
            if event.id:
                call.update(id=event.id, type="function")
            function: dict[str, str] = {"arguments": event.arguments}
            if event.name:
                function["name"] = event.name
            call["function"] = function
            return out + self._chunk({"tool_calls": [call]})
        if isinstance(event, Finish):
            return out + self._finish(event)
        return out  # a MalformedEvent: routing counts and drops those before any encoder

    def _adopt(self, data: bytes) -> None:
        """The relayed upstream's completion id, time and model: chunks framed here
        later (a continuation) must read as the same completion."""
        try:
            chunk = orjson.loads(data.removeprefix(b"data: "))
        except orjson.JSONDecodeError:
            return
        if isinstance(chunk, dict):
            self.id = str(chunk.get("id") or self.id)
            self.created = int(chunk.get("created") or self.created)
            self.model = str(chunk.get("model") or self.model)

    def _finish(self, finish: Finish) -> bytes:
        out = self._chunk({}, FINISH_REASONS[finish.reason])
        if self.include_usage:
            body = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [],
                "usage": usage_body(finish.usage),
            }
            out += b"data: " + jsonio.dumps(body) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def error(self, body: dict[str, Any]) -> bytes:
        """An in-band error (`body`: the error envelope, from gateway.errors): the
        stream had started, so the status is already sent."""
        return b"data: " + orjson.dumps(body) + b"\n\n"
