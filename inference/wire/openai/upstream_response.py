"""An OpenAI-compatible provider's answer -> the internal result: a whole
chat.completion body (`result_of`), or its stream chunk by chunk (`StreamDecoder`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ... import jsonio
from ...base import ResultBuilder
from ...types import (
    ChatRequest,
    ChatResult,
    Event,
    Finish,
    FinishReason,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
    WireEvent,
)
from ..common import MalformedResponse, StreamEnd
from .upstream_request import client_wants_usage

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def usage_of(data: dict[str, Any] | None) -> Usage:
    data = data or {}
    details = data.get("prompt_tokens_details") or {}  # a prompt cache's hits, when it has one
    return Usage(
        input_tokens=int(data.get("prompt_tokens") or 0),
        output_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
    )


def result_of(data: dict[str, Any]) -> ChatResult:
    """A chat.completion body; MalformedResponse when it has no answer in it."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("no choices in the response")
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


class StreamDecoder(StreamEnd):
    """A chat.completion.chunk stream, one parsed chunk at a time -> internal events.

    Each chunk is relayed first (a WireEvent, for a client of the same
    protocol), then its deltas; the finish reason and usage are kept for the
    Finish at the end. Reading the events, and what an error chunk or a
    truncated stream means, is the cloud client's.
    """

    def __init__(self, request: ChatRequest) -> None:
        # The gateway always asks for usage; a client of the same protocol that
        # did not gets the stream without it.
        self.strip_usage = request.source_protocol == "openai" and not client_wants_usage(request)
        super().__init__()

    def decode(self, chunk: dict[str, Any], raw: Callable[[], bytes]) -> Iterator[Event]:
        """`raw`: the chunk's event as it came, framed as SSE; called only when it
        is relayed as it came (a chunk whose usage is taken out is framed anew)."""
        if chunk.get("usage"):
            self.usage = usage_of(chunk["usage"])
        relayed = _relayed(raw, chunk, self.strip_usage)
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
                self.reason, self.stop_sequence = _finish_of(choice)


def _relayed(
    raw: Callable[[], bytes], chunk: dict[str, Any], strip_usage: bool
) -> WireEvent | None:
    """The event for a client of the same protocol: as it came, but without the
    usage the gateway asked for on its own behalf."""
    if not strip_usage or "usage" not in chunk:
        return WireEvent("openai", raw())
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
