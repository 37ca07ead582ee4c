"""OpenAI chat-completions wire format <-> the internal form."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from pydantic import ValidationError

from inference import jsonio
from inference.errors import GatewayError, InvalidRequest
from inference.types import (
    ChatRequest,
    ChatResult,
    Continued,
    Event,
    Finish,
    ImagePart,
    Message,
    Part,
    PromptUsage,
    Reasoning,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCallDelta,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    Usage,
    WireEvent,
)

from ..errors import error_body, validation_message
from ..schemas.openai import ChatCompletionRequest, ChatMessage

__all__ = ["ChatCompletionRequest", "StreamEncoder", "completion_body", "parse_request"]

FINISH_REASONS = {
    "stop": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
}
# Fields of the wire request that the internal form models; the rest are
# protocol extensions a backend must either honour or refuse.
_MODELLED = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
    "stop", "seed", "n", "stream", "stream_options", "user", "tools", "tool_choice",
    "parallel_tool_calls", "metadata", "reasoning_effort",
    # vLLM's switches for continuing a trailing assistant message, which the
    # gateway's own model-server client sends (a continuation, see routing.continuation).
    "continue_final_message", "add_generation_prompt",
}  # fmt: skip
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# Defaults that are the same as not asking for the feature at all.
_NEUTRAL = {
    "logprobs": (False, None),
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "store": (False, None),
    "service_tier": ("auto", "default", None),
}


def parse_request(data: Any) -> tuple[ChatRequest, bool]:
    """Validate a request body; returns the internal request and include_usage."""
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        wire = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc.errors(include_url=False))
        raise InvalidRequest(message, param=param) from None
    if wire.n not in (None, 1):
        raise InvalidRequest("only n=1 is supported", param="n", code="unsupported_value")
    stop = [wire.stop] if isinstance(wire.stop, str) else list(wire.stop or [])
    extensions = {
        key: value
        for key, value in data.items()
        if key not in _MODELLED and value not in _NEUTRAL.get(key, (None,))
    }
    request = ChatRequest(
        model=wire.model,
        messages=[_message(m, i) for i, m in enumerate(wire.messages)],
        max_tokens=wire.max_completion_tokens or wire.max_tokens,
        temperature=wire.temperature,
        top_p=wire.top_p,
        stop=stop,
        seed=wire.seed,
        tools=[
            ToolSpec(t.function.name, t.function.description, t.function.parameters)
            for t in wire.tools or []
        ],
        tool_choice=_tool_choice(wire.tool_choice, wire.parallel_tool_calls),
        stream=wire.stream,
        user=wire.user,
        metadata=wire.metadata or {},
        reasoning=_reasoning(wire.reasoning_effort),
        extensions=extensions,
        source_protocol="openai",
        raw=data,
        continuation=_continues(data, wire.messages),
    )
    include_usage = bool(wire.stream_options and wire.stream_options.include_usage)
    return request, include_usage


def _continues(data: dict[str, Any], messages: list[Any]) -> bool:
    """`continue_final_message`: the trailing assistant message is continued,
    as a local model always does with one; said explicitly, it must be there."""
    if data.get("continue_final_message") is not True:
        return False
    if not messages or messages[-1].role != "assistant":
        raise InvalidRequest(
            "continue_final_message needs a final assistant message to continue",
            param="continue_final_message",
        )
    return True


def _reasoning(effort: str | None) -> Reasoning | None:
    if effort is None:
        return None
    if effort not in REASONING_EFFORTS:
        choices = ", ".join(REASONING_EFFORTS)
        raise InvalidRequest(f"reasoning_effort must be one of {choices}", param="reasoning_effort")
    return Reasoning(enabled=effort != "none", effort=None if effort == "none" else effort)


def _message(wire: ChatMessage, index: int) -> Message:
    role = "system" if wire.role == "developer" else wire.role
    if role == "tool":
        if not wire.tool_call_id:
            raise InvalidRequest(
                "tool messages need a tool_call_id", param=f"messages.{index}.tool_call_id"
            )
        content = _parts(wire.content, index)
        return Message(
            "tool",
            [
                ToolResultPart(
                    wire.tool_call_id, [p for p in content if isinstance(p, TextPart | ImagePart)]
                )
            ],
        )
    parts: list[Part] = []
    if wire.reasoning_content:
        parts.append(ThinkingPart(wire.reasoning_content))
    parts.extend(_parts(wire.content, index))
    for call in wire.tool_calls or []:
        parts.append(ToolCallPart(call.id, call.function.name, call.function.arguments))
    return Message(role, parts, name=wire.name)  # type: ignore[arg-type]


def _parts(content: str | list[dict[str, Any]] | None, index: int) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[Part] = []
    for j, block in enumerate(content):
        kind = block.get("type")
        param = f"messages.{index}.content.{j}"
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(TextPart(block["text"]))
        elif kind == "image_url" and isinstance(block.get("image_url"), dict):
            parts.append(_image(block["image_url"].get("url"), param))
        else:
            raise InvalidRequest(f"{param}: unsupported content part {kind!r}", param=param)
    return parts


def _image(url: Any, param: str) -> ImagePart:
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{param}: image_url.url must be a string", param=param)
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        if ";base64" not in header:
            raise InvalidRequest(f"{param}: data URLs must be base64", param=param)
        return ImagePart(media_type=header[5:].split(";")[0] or None, data=data)
    return ImagePart(url=url)


def _tool_choice(choice: str | dict[str, Any] | None, parallel: bool | None) -> ToolChoice | None:
    parallel_ok = parallel is not False
    if choice is None:
        return None if parallel is None else ToolChoice("auto", parallel=parallel_ok)
    if choice in ("auto", "none"):
        return ToolChoice(choice, parallel=parallel_ok)  # type: ignore[arg-type]
    if choice == "required":
        return ToolChoice("any", parallel=parallel_ok)
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if isinstance(name, str) and name:
            return ToolChoice("tool", name=name, parallel=parallel_ok)
    raise InvalidRequest("tool_choice is not valid", param="tool_choice")


# ------------------------------------------------------------------ responses


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
        return out + self._finish(event)

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

    def error(self, error: GatewayError) -> bytes:
        """An in-band error: the stream had started, so the status is already sent."""
        return b"data: " + orjson.dumps(error_body(error, "openai")) + b"\n\n"
