"""Internal answers -> Anthropic's `message` object and its stream of named SSE
events; a token count -> count_tokens' answer."""

from __future__ import annotations

import json
import uuid
from typing import Any, ClassVar, Literal

from ... import jsonio, scrub
from ...types import (
    ChatResult,
    Continued,
    Event,
    Finish,
    FinishReason,
    Part,
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

# Internal finish reason -> Anthropic stop_reason. Not the inverse of
# upstream_response.STOP_REASONS: that one folds pause_turn into "stop".
STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
    "content_filter": "refusal",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the object Anthropic's `input` must be.

    A JSON value that is not an object is wrapped as {"value": ...}, the same
    convention `upstream_request` uses; text that is not JSON
    at all (a local model can write anything) is passed on as {"arguments": text}
    rather than lost, so the client's own validation can say what is wrong.
    """
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def content_blocks(parts: list[Part]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ThinkingPart):
            # Anthropic's block always has a signature. Reasoning from other
            # backends has none; when a client sends it back unsigned, the
            # Anthropic upstream translation drops it, as Anthropic requires.
            blocks.append(
                {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
            )
        elif isinstance(part, ToolCallPart):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": part.id or new_id("toolu"),
                    "name": part.name,
                    "input": tool_input(part.arguments),
                }
            )
    return blocks


def stop_fields(finish: Finish) -> dict[str, Any]:
    reason = STOP_REASONS[finish.reason]
    return {
        "stop_reason": reason,
        "stop_sequence": finish.stop_sequence if reason == "stop_sequence" else None,
    }


def usage_fields(usage: Usage) -> dict[str, int]:
    """Anthropic's usage: `input_tokens` excludes what was read from the prompt
    cache. The gateway's local cache keeps every prompt without a separate write
    step or price, so nothing is reported as cache creation."""
    return {
        "input_tokens": usage.input_tokens - usage.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    }


def message_body(result: ChatResult, model: str) -> dict[str, Any]:
    """The `message` object of a non-streaming answer."""
    if result.raw is not None and result.raw_protocol == "anthropic":
        return result.raw  # an Anthropic upstream's answer, untouched
    usage = result.finish.usage
    return {
        "id": result.id if result.id and result.id.startswith("msg_") else new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(result.content),
        **stop_fields(result.finish),
        "usage": usage_fields(usage),
    }


def count_tokens_body(count: int) -> dict[str, Any]:
    """The answer of /v1/messages/count_tokens."""
    return {"input_tokens": count}


def sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + jsonio.dumps(data) + b"\n\n"


class StreamEncoder:
    """Internal events -> Anthropic's event sequence.

    message_start, then per content block content_block_start / _delta... /
    _stop (a ping after the first start, as Anthropic sends one), then
    message_delta and message_stop at Finish. A block ends when the kind of
    content changes or a new tool call begins; every tool call is its own block.

    When the backend relays an Anthropic upstream (WireEvent), its bytes go out
    as they came and the events derived from them are not sent a second time.
    """

    protocol: ClassVar[Literal["anthropic"]] = "anthropic"

    def __init__(self, model: str) -> None:
        self.id = new_id("msg")
        self.model = model
        self._started = False
        self._pinged = False
        self._open: tuple[str, int] | None = None  # (kind, block index) of the open block
        self._blocks = 0
        self._tools: dict[int, int] = {}  # tool call index -> its block index
        self._passthrough = False
        self._relayed_error = False
        self._relayed_stop = False

    def encode(self, event: Event) -> bytes:
        if isinstance(event, WireEvent):
            if event.protocol != "anthropic":
                return b""
            self._passthrough = True
            self._relayed_error = event.data.startswith(b"event: error\n")
            self._relayed_stop |= event.data.startswith(b"event: message_stop\n")
            if event.data.startswith(b"event: content_block_stop\n"):
                self._open = None  # a continuation must not write into a closed block
            if self._relayed_error:  # the upstream's words: may echo its key
                return scrub.for_client(event.data.decode(errors="replace")).encode()
            return event.data
        if isinstance(event, Continued):
            # Another target finishes the answer: its content goes on in the
            # message (and the block) the client already has, framed here.
            self._passthrough = False
            return b""
        if self._passthrough:
            # The backend accepts an upstream stream that ends after message_delta;
            # the client still gets the message_stop its SDK waits for.
            if isinstance(event, Finish) and not self._relayed_stop:
                return sse("message_stop", {"type": "message_stop"})
            self._started = self._pinged = True
            self._track(event)
            return b""
        out: list[bytes] = []
        if not self._started:
            self._started = True
            out.append(self._message_start(event))
        if isinstance(event, PromptUsage):
            return b"".join(out)
        if isinstance(event, Finish):
            out.append(self._finish(event))
        else:
            self._encode_content(event, out)
        return b"".join(out)

    def _track(self, event: Event) -> None:
        """Keep the block bookkeeping in step with a relayed upstream's blocks, without
        encoding anything (passthrough is the fast path): a continuation after it
        goes on in the right block."""
        if isinstance(event, TextDelta) and event.text:
            self._mark("text")
        elif isinstance(event, ThinkingDelta) and (event.text or event.signature):
            self._mark("thinking")
        elif isinstance(event, ToolCallDelta) and event.index not in self._tools:
            self._tools[event.index] = self._mark(f"tool:{event.index}")

    def _mark(self, kind: str) -> int:
        if self._open is not None and self._open[0] == kind:
            return self._open[1]
        index = self._blocks
        self._blocks += 1
        self._open = (kind, index)
        return index

    def _encode_content(self, event: Event, out: list[bytes]) -> None:
        if isinstance(event, TextDelta):
            if event.text:
                index = self._block(out, "text", {"type": "text", "text": ""})
                out.append(self._delta(index, {"type": "text_delta", "text": event.text}))
        elif isinstance(event, ThinkingDelta):
            if event.text or event.signature:
                start: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
                index = self._block(out, "thinking", start)
                if event.text:
                    out.append(
                        self._delta(index, {"type": "thinking_delta", "thinking": event.text})
                    )
                if event.signature:
                    delta = {"type": "signature_delta", "signature": event.signature}
                    out.append(self._delta(index, delta))
        elif isinstance(event, ToolCallDelta):
            block = self._tools.get(event.index)
            if block is None:
                start = {
                    "type": "tool_use",
                    "id": event.id or new_id("toolu"),
                    "name": event.name or "",
                    "input": {},
                }
                block = self._tools[event.index] = self._block(out, f"tool:{event.index}", start)
            # A piece for a call whose block was already closed (no backend does
            # this) still goes to that call's index rather than being lost.
            if event.arguments:
                delta = {"type": "input_json_delta", "partial_json": event.arguments}
                out.append(self._delta(block, delta))

    def error(self, body: dict[str, Any]) -> bytes:
        """An in-band error (`body`: the error envelope, from gateway.errors): the
        stream had started, so the status is already sent."""
        if self._relayed_error:
            return b""  # the upstream's own error event already went out as it was
        return sse("error", body)

    def _message_start(self, first: Event) -> bytes:
        # A local model counts its prompt first (PromptUsage); cloud backends
        # translated from OpenAI know it only at Finish. Either way it is
        # repeated in message_delta, whose usage the SDKs take over message_start's.
        if isinstance(first, PromptUsage):
            usage = Usage(input_tokens=first.input_tokens, cached_tokens=first.cached_tokens)
        else:
            usage = first.usage if isinstance(first, Finish) else Usage()
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage_fields(usage), "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _block(self, out: list[bytes], kind: str, start: dict[str, Any]) -> int:
        if self._open is not None and self._open[0] == kind:
            return self._open[1]
        self._close(out)
        index = self._mark(kind)
        out.append(
            sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        self._ping(out)
        return index

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            index = self._open[1]
            out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
            self._open = None

    def _ping(self, out: list[bytes]) -> None:
        if not self._pinged:
            self._pinged = True
            out.append(sse("ping", {"type": "ping"}))

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return sse(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def _finish(self, finish: Finish) -> bytes:
        out: list[bytes] = []
        self._close(out)
        self._ping(out)
        usage = usage_fields(finish.usage)
        out.append(
            sse(
                "message_delta",
                {"type": "message_delta", "delta": stop_fields(finish), "usage": usage},
            )
        )
        out.append(sse("message_stop", {"type": "message_stop"}))
        return b"".join(out)
