"""An OpenAI chat-completions request from a client -> the internal request."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError

from ...errors import InvalidRequest
from ...types import (
    ChatRequest,
    ImagePart,
    Message,
    Part,
    Reasoning,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
)
from ..common import extensions, validation_message
from .schemas import ChatCompletionRequest, ChatMessage

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
_NEUTRAL: dict[str, tuple[Any, ...]] = {
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
        extensions=extensions(data, _MODELLED, _NEUTRAL),
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
    return Message(role, parts, name=wire.name)


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


# OpenAI's tool_choice strings and the internal modes they mean.
_MODES: dict[str, Literal["auto", "none", "any"]] = {
    "auto": "auto",
    "none": "none",
    "required": "any",
}


def _tool_choice(choice: str | dict[str, Any] | None, parallel: bool | None) -> ToolChoice | None:
    parallel_ok = parallel is not False
    if choice is None:
        return None if parallel is None else ToolChoice("auto", parallel=parallel_ok)
    if isinstance(choice, str) and choice in _MODES:
        return ToolChoice(_MODES[choice], parallel=parallel_ok)
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if isinstance(name, str) and name:
            return ToolChoice("tool", name=name, parallel=parallel_ok)
    raise InvalidRequest("tool_choice is not valid", param="tool_choice")
