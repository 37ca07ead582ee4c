"""OpenAI-compatible providers: the internal form <-> chat-completions upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .. import jsonio
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
    TextDelta,
    TextPart,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Usage,
    WireEvent,
)
from .errors import UpstreamError
from .sse import SSEEvent, encode_sse
from .transport import CloudBackend, EventParser, TimedEvents, malformed

OFFICIAL_HOST = "api.openai.com"
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def request_body(
    request: ChatRequest, model: str, *, stream: bool, official: bool = False
) -> dict[str, Any]:
    """The chat-completions body; `official`: the provider is OpenAI's own API."""
    if request.raw is not None and request.source_protocol == "openai":
        body = {**request.raw, "model": model}  # same protocol: untouched but the model
        if stream and not client_wants_usage(request):
            # Usage is what key limits and the request log count: asked for
            # always, and taken out again before the client sees the stream.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return body
    if request.extensions and request.source_protocol != "openai":
        raise UnsupportedFeature.of_extensions(request.extensions, "an OpenAI-compatible provider")
    body: dict[str, Any] = {"model": model, "messages": wire_messages(request.messages)}
    if official and request.top_k is not None:
        # Compatible servers (vLLM, llama.cpp, Ollama...) take top_k; OpenAI refuses it.
        raise UnsupportedFeature("OpenAI's own API has no top_k", param="top_k")
    options = {
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "seed": request.seed,
        "user": request.user,
        "stop": request.stop or None,
        "reasoning_effort": _effort(request),
    }
    body.update({k: v for k, v in options.items() if v is not None})
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    choice = request.tool_choice
    if choice is not None and request.tools:  # OpenAI refuses a tool_choice without tools
        body["tool_choice"] = {
            "auto": "auto",
            "none": "none",
            "any": "required",
            "tool": {"type": "function", "function": {"name": choice.name}},
        }[choice.mode]
        if not choice.parallel:
            body["parallel_tool_calls"] = False
    if request.metadata and request.source_protocol == "openai":
        body["metadata"] = request.metadata
    if request.source_protocol == "openai":
        body.update(request.extensions)
    if request.continuation:
        # vLLM's and compatible servers' switch for continuing the last message.
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = _system_message(messages)
    if system is not None:
        out.append(system)
    for message in messages:
        if message.role == "system":
            continue
        content: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                content.append({"type": "image_url", "image_url": {"url": image_url(part)}})
            elif isinstance(part, ToolCallPart):
                calls.append(
                    {
                        "id": part.id,
                        "type": "function",
                        "function": {"name": part.name, "arguments": part.arguments or "{}"},
                    }
                )
            elif isinstance(part, ToolResultPart):
                out.append(_tool_message(part))
        role = message.role
        if role == "tool" or (not content and not calls and role != "assistant"):
            continue
        entry: dict[str, Any] = {"role": role, "content": _content(content)}
        if calls:
            entry["tool_calls"] = calls
            if not content:
                entry["content"] = None
        if message.name:
            entry["name"] = message.name
        out.append(entry)
    return out


def _system_message(messages: list[Message]) -> dict[str, Any] | None:
    """Every system text as one system message first: many chat templates behind
    OpenAI-compatible servers (Llama, Mistral...) reject a second one, and an
    Anthropic client's `system` may come as several blocks."""
    texts = [
        part.text
        for message in messages
        if message.role == "system"
        for part in message.content
        if isinstance(part, TextPart) and part.text
    ]
    return {"role": "system", "content": "\n\n".join(texts)} if texts else None


def _tool_message(part: ToolResultPart) -> dict[str, Any]:
    """OpenAI carries each tool result as its own "tool" message, of text only."""
    if any(isinstance(p, ImagePart) for p in part.content):
        raise UnsupportedFeature(
            "an OpenAI-compatible provider takes no images in tool results", param="messages"
        )
    text = "\n".join(p.text for p in part.content if isinstance(p, TextPart))
    if part.is_error:
        text = f"Error: {text}" if text else "Error"  # OpenAI has no is_error flag
    return {"role": "tool", "tool_call_id": part.tool_call_id, "content": text}


# Anthropic's thinking budget as OpenAI's reasoning effort.
def _effort(request: ChatRequest) -> str | None:
    reasoning = request.reasoning
    if reasoning is None or not reasoning.enabled:
        return None  # not every model knows "none": off is not asking
    if reasoning.effort:
        return reasoning.effort
    budget = reasoning.budget_tokens or 0
    return "low" if budget <= 4096 else "medium" if budget <= 16384 else "high"


def client_wants_usage(request: ChatRequest) -> bool:
    options = (request.raw or {}).get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # A plain string where possible: every OpenAI-compatible server takes it.
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts) if len(parts) <= 1 else parts
    return parts


def image_url(part: ImagePart) -> str:
    if part.url:
        return part.url
    return f"data:{part.media_type or 'image/png'};base64,{part.data}"


def usage_of(data: dict[str, Any] | None) -> Usage:
    data = data or {}
    return Usage(
        input_tokens=int(data.get("prompt_tokens") or 0),
        output_tokens=int(data.get("completion_tokens") or 0),
    )


def result_of(data: dict[str, Any], backend: str) -> ChatResult:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise malformed(backend, "no choices in the response")
    choice = choices[0]
    message = choice.get("message") or {}
    builder = ResultBuilder(str(data.get("model") or ""))
    if message.get("reasoning_content"):
        builder.add(ThinkingDelta(message["reasoning_content"]))
    if message.get("content"):
        builder.add(TextDelta(message["content"]))
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        builder.add(
            ToolCallDelta(
                index, call.get("id"), function.get("name"), function.get("arguments") or ""
            )
        )
    reason, stop_sequence = _finish_of(choice)
    builder.add(
        Finish(reason=reason, usage=usage_of(data.get("usage")), stop_sequence=stop_sequence)
    )
    return builder.result(data.get("id"))


class OpenAIBackend(CloudBackend):
    """A chat-completions endpoint: OpenAI itself or any compatible server."""

    protocol = "openai"
    path = "/chat/completions"

    def body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        official = self.config.base_url.partition("://")[2].startswith(OFFICIAL_HOST)
        return request_body(request, self.model, stream=stream, official=official)

    def parse(self, data: dict[str, Any]) -> ChatResult:
        return result_of(data, self.name)

    async def read_stream(self, events: TimedEvents, request: ChatRequest) -> AsyncIterator[Event]:
        finish: FinishReason | None = None
        stop_sequence: str | None = None
        usage = Usage()
        strip_usage = request.source_protocol == "openai" and not client_wants_usage(request)
        parser = EventParser(self.name)
        async for event in events:
            if event.data.strip() == "[DONE]":
                if finish is None:
                    break  # a truncated answer: said below, before the client sees [DONE]
                yield WireEvent("openai", encode_sse(event))
                break
            chunk = parser.parse(event)
            if isinstance(chunk, MalformedEvent):
                yield chunk
                continue
            if "error" in chunk:
                raise _stream_error(self.name, chunk["error"])
            if chunk.get("usage"):
                usage = usage_of(chunk["usage"])
            # Relayed only once known good: a broken event becomes our error.
            relayed = _relayed(event, chunk, strip_usage)
            if relayed is not None:
                yield relayed
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("reasoning_content"):
                    yield ThinkingDelta(delta["reasoning_content"])
                if delta.get("content"):
                    yield TextDelta(delta["content"])
                for call in delta.get("tool_calls") or []:
                    function = call.get("function") or {}
                    yield ToolCallDelta(
                        int(call.get("index") or 0),
                        call.get("id"),
                        function.get("name"),
                        function.get("arguments") or "",
                    )
                if choice.get("finish_reason"):
                    finish, stop_sequence = _finish_of(choice)
        if finish is None:
            # A clean end without a finish reason is still a truncated answer.
            raise malformed(self.name, "the stream ended without a finish reason")
        yield Finish(reason=finish, usage=usage, stop_sequence=stop_sequence)


def _relayed(event: SSEEvent, chunk: dict[str, Any], strip_usage: bool) -> WireEvent | None:
    """The event for a client of the same protocol: as it came, but without the
    usage the gateway asked for on its own behalf."""
    if not strip_usage or "usage" not in chunk:
        return WireEvent("openai", encode_sse(event))
    if not chunk.get("choices"):
        return None  # the usage-only last chunk
    chunk = {k: v for k, v in chunk.items() if k != "usage"}
    return WireEvent("openai", b"data: " + jsonio.dumps(chunk) + b"\n\n")


def _finish_of(choice: dict[str, Any]) -> tuple[FinishReason, str | None]:
    """A choice's finish reason, and which stop string ended the answer where the
    server says (vLLM's stop_reason)."""
    reason = choice.get("finish_reason")
    stop = choice.get("stop_reason")
    if reason == "stop" and isinstance(stop, str):
        return "stop_sequence", stop
    return _FINISH.get(reason or "stop", "stop"), None


def _stream_error(backend: str, error: Any) -> UpstreamError:
    message = error.get("message") if isinstance(error, dict) else str(error)
    return UpstreamError(
        f"provider {backend!r} reported an error mid-stream: {message}",
        category="transient", backend=backend, status=502, code="upstream_stream_error",
    )  # fmt: skip
