"""Anthropic providers: the internal form <-> the Messages API upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from ..base import ResultBuilder
from ..errors import UnsupportedFeature
from ..types import (
    ChatRequest,
    ChatResult,
    Event,
    Finish,
    FinishReason,
    ImagePart,
    MalformedEvent,
    Message,
    Part,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Usage,
    WireEvent,
)
from .errors import UpstreamError
from .sse import encode_sse
from .transport import CloudBackend, EventParser, TimedEvents, malformed, post_json

# Anthropic requires max_tokens; OpenAI clients often omit it.
DEFAULT_MAX_TOKENS = 4096

STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop_sequence",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


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


def usage_of(data: dict[str, Any] | None) -> Usage:
    data = data or {}
    cached = int(data.get("cache_creation_input_tokens") or 0) + int(
        data.get("cache_read_input_tokens") or 0
    )
    return Usage(
        input_tokens=int(data.get("input_tokens") or 0) + cached,
        output_tokens=int(data.get("output_tokens") or 0),
    )


def result_of(data: dict[str, Any], backend: str) -> ChatResult:
    content = data.get("content")
    if data.get("type") == "error" or not isinstance(content, list):
        raise malformed(backend, "no content in the response")
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


class AnthropicBackend(CloudBackend):
    protocol = "anthropic"
    path = "/messages"
    counts_tokens = True

    def body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        return request_body(request, self.model, stream=stream)

    def parse(self, data: dict[str, Any]) -> ChatResult:
        return result_of(data, self.name)

    def headers(self, request: ChatRequest) -> dict[str, str]:
        # The Anthropic API chose them (anthropic-beta): they come along unchanged.
        return request.headers

    async def count_tokens(self, request: ChatRequest) -> int:
        body = count_body(request, self.model)
        data = await post_json(
            self.config, "/messages/count_tokens", body, self.deadline, self.headers(request)
        )
        return int(data.get("input_tokens") or 0)

    async def read_stream(self, events: TimedEvents, request: ChatRequest) -> AsyncIterator[Event]:
        usage = Usage()
        finish: FinishReason | None = None
        stop_sequence: str | None = None
        tool_index: dict[int, int] = {}  # content block index -> tool call index
        parser = EventParser(self.name)
        async for event in events:
            data = parser.parse(event)
            if isinstance(data, MalformedEvent):
                yield data
                continue
            kind = data.get("type") or event.event
            if kind == "error":
                raise _stream_error(self.name, data.get("error"))
            # Relayed only once known good: a broken event becomes our error.
            yield WireEvent("anthropic", encode_sse(event))
            if kind == "message_start":
                usage = usage_of((data.get("message") or {}).get("usage"))
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                if block.get("type") == "tool_use":
                    index = tool_index.setdefault(int(data.get("index", 0)), len(tool_index))
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
                    index = tool_index.get(int(data.get("index", 0)), 0)
                    yield ToolCallDelta(index, arguments=delta.get("partial_json") or "")
            elif kind == "message_delta":
                delta = data.get("delta") or {}
                finish = STOP_REASONS.get(delta.get("stop_reason") or "end_turn", "stop")
                stop_sequence = delta.get("stop_sequence")
                out = usage_of(data.get("usage"))
                usage = Usage(usage.input_tokens or out.input_tokens, out.output_tokens)
            elif kind == "message_stop":
                break
        if finish is None:
            raise malformed(self.name, "the stream ended before message_delta")
        yield Finish(reason=finish, usage=usage, stop_sequence=stop_sequence)


def _stream_error(backend: str, error: Any) -> UpstreamError:
    error = error if isinstance(error, dict) else {}
    kind = str(error.get("type") or "api_error")
    client = kind in ("invalid_request_error", "request_too_large")
    return UpstreamError(
        f"provider {backend!r} reported {kind} mid-stream: {error.get('message') or ''}".rstrip(),
        category="client" if client else "transient",
        backend=backend,
        upstream_status=529 if kind == "overloaded_error" else None,
        status=400 if client else (503 if kind == "overloaded_error" else 502),
        code="upstream_stream_error",
    )
