"""The internal request -> the Messages (or count_tokens) body the gateway sends
an Anthropic provider."""

from __future__ import annotations

import json
from typing import Any

from ...errors import UnsupportedFeature
from ...types import (
    ChatRequest,
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)

# Anthropic requires max_tokens; OpenAI clients often omit it.
DEFAULT_MAX_TOKENS = 4096


def request_body(request: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    if request.raw is not None and request.source_protocol == "anthropic":
        return {**request.raw, "model": model}  # same protocol: untouched but the model
    if request.extensions and request.source_protocol != "anthropic":
        raise UnsupportedFeature.of_extensions(request.extensions, "an Anthropic provider")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        **prompt_fields(request),
    }
    options = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "stop_sequences": request.stop or None,
    }
    body.update({k: v for k, v in options.items() if v is not None})
    choice = request.tool_choice
    if choice is not None and (request.tools or choice.mode == "none"):
        tool_choice: dict[str, Any] = {"type": choice.mode}
        if choice.mode == "tool":
            tool_choice["name"] = choice.name
        if not choice.parallel and choice.mode != "none":
            tool_choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = tool_choice
    thinking = _thinking(request, body["max_tokens"])
    if thinking is not None:
        body["thinking"] = thinking
    metadata = dict(request.metadata) if request.source_protocol == "anthropic" else {}
    if request.user and "user_id" not in metadata:
        metadata["user_id"] = request.user
    if metadata:
        body["metadata"] = metadata
    if request.source_protocol == "anthropic":
        body.update(request.extensions)
    if stream:
        body["stream"] = True
    return body


# OpenAI's reasoning effort as a thinking budget (Anthropic's minimum is 1024).
EFFORT_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}


def _thinking(request: ChatRequest, max_tokens: int) -> dict[str, Any] | None:
    reasoning = request.reasoning
    if reasoning is None:
        return None
    if not reasoning.enabled:
        return {"type": "disabled"}
    budget = reasoning.budget_tokens or EFFORT_BUDGETS.get(reasoning.effort or "", 8192)
    if request.source_protocol != "anthropic":
        # OpenAI counts reasoning inside max_completion_tokens; Anthropic wants
        # the budget below max_tokens, and at least 1024.
        budget = min(budget, max_tokens - 1)
        if budget < 1024:
            raise UnsupportedFeature(
                "reasoning on an Anthropic provider needs more than 1024 max tokens "
                f"(got {max_tokens})",
                param="reasoning_effort",
            )
    return {"type": "enabled", "budget_tokens": budget}


# Fields of a Messages request that count_tokens does not take.
_NOT_COUNTED = {
    "max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata",
    "service_tier", "container",
}  # fmt: skip


def count_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The count_tokens body: the client's own prompt fields when it spoke Anthropic."""
    if request.raw is not None and request.source_protocol == "anthropic":
        body = {k: v for k, v in request.raw.items() if k not in _NOT_COUNTED}
        return {**body, "model": model}
    return {"model": model, **prompt_fields(request)}


def prompt_fields(request: ChatRequest) -> dict[str, Any]:
    """system, messages and tools: what both a request and count_tokens carry."""
    system = [
        {"type": "text", "text": p.text}
        for m in request.messages
        if m.role == "system"
        for p in m.content
        if isinstance(p, TextPart)
    ]
    fields: dict[str, Any] = {"messages": wire_messages(request.messages)}
    if system:
        fields["system"] = system[0]["text"] if len(system) == 1 else system
    if request.tools:
        fields["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": t.parameters,
            }
            for t in request.tools
        ]
    return fields


def wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = [b for b in (block_of(p) for p in message.content) if b is not None]
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)  # Anthropic wants turns to alternate
        else:
            out.append({"role": role, "content": blocks})
    return out


def block_of(part: Part) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        # Anthropic refuses empty text blocks (an OpenAI assistant turn with
        # tool calls often has content ""): they say nothing, so they go.
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        if part.url:
            return {"type": "image", "source": {"type": "url", "url": part.url}}
        source = {"type": "base64", "media_type": part.media_type or "image/png", "data": part.data}
        return {"type": "image", "source": source}
    if isinstance(part, ToolCallPart):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": _input(part)}
    if isinstance(part, ToolResultPart):
        content = [c for c in (block_of(p) for p in part.content) if c is not None]
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.tool_call_id}
        if content:
            block["content"] = content
        if part.is_error:
            block["is_error"] = True
        return block
    if isinstance(part, ThinkingPart):
        # Anthropic accepts earlier thinking only with the signature it issued.
        if part.signature:
            return {"type": "thinking", "thinking": part.text, "signature": part.signature}
        return None
    return None


def _input(part: ToolCallPart) -> Any:
    try:
        value = json.loads(part.arguments) if part.arguments.strip() else {}
    except json.JSONDecodeError:
        raise UnsupportedFeature(
            f"tool call {part.id!r} has arguments that are not JSON", param="messages"
        ) from None
    return value if isinstance(value, dict) else {"value": value}
