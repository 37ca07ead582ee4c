"""The internal form of a chat request and of its answer.

Every wire protocol translates to and from these types, and every backend
consumes and produces them, so N protocols and M backends need N + M
translators rather than N x M.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# Longer requested names are refused (400) before any lookup: real model names
# are far shorter, and a name is held in caches, labels, log rows and headers.
MAX_MODEL_NAME = 256

Role = Literal["system", "user", "assistant", "tool"]
# Internal finish reasons; protocols map them to their own names.
FinishReason = Literal["stop", "length", "tool_calls", "stop_sequence", "content_filter"]


@dataclass(slots=True)
class TextPart:
    text: str


@dataclass(slots=True)
class ImagePart:
    media_type: str | None = None
    data: str | None = None  # base64, when the client sent the bytes
    url: str | None = None  # passed on as is; the gateway never fetches it


@dataclass(slots=True)
class ThinkingPart:
    text: str
    signature: str | None = None


@dataclass(slots=True)
class ToolCallPart:
    id: str
    name: str
    arguments: str  # JSON text, as both protocols stream it


@dataclass(slots=True)
class ToolResultPart:
    tool_call_id: str
    content: list[TextPart | ImagePart]
    is_error: bool = False


Part = TextPart | ImagePart | ThinkingPart | ToolCallPart | ToolResultPart


@dataclass(slots=True)
class Message:
    role: Role
    content: list[Part]
    name: str | None = None


@dataclass(slots=True)
class ToolSpec:
    name: str
    description: str | None
    parameters: dict[str, Any]


@dataclass(slots=True)
class ToolChoice:
    mode: Literal["auto", "any", "none", "tool"]
    name: str | None = None
    parallel: bool = True


@dataclass(slots=True)
class Reasoning:
    """Thinking asked for: on or off, with Anthropic's token budget or OpenAI's effort."""

    enabled: bool
    budget_tokens: int | None = None
    effort: str | None = None  # "minimal", "low", "medium", "high"


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    stream: bool = False
    user: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    reasoning: Reasoning | None = None
    # Wire fields the internal form does not model (say, OpenAI's `logprobs`):
    # a backend that cannot honour one refuses the request instead of
    # silently ignoring it.
    extensions: dict[str, Any] = field(default_factory=dict)
    # The wire protocol the client spoke ("openai" / "anthropic"); extensions
    # only make sense to an upstream of the same protocol.
    source_protocol: str | None = None
    # The client's request body as received: an upstream speaking the same
    # protocol gets it untouched but for the model name (lossless passthrough).
    raw: dict[str, Any] | None = field(default=None, repr=False)
    # Client headers an upstream of the same protocol needs too (anthropic-beta).
    headers: dict[str, str] = field(default_factory=dict)
    # The gateway continues a stream another target broke off: the last message
    # is the answer so far (an assistant prefill), to be continued, not answered.
    continuation: bool = False


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0  # the whole prompt, cached part included
    output_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens, read from a prompt cache


# Stream events, in the order a backend yields them.


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ThinkingDelta:
    text: str
    signature: str | None = None  # Anthropic's, sent at the end of a thinking block


@dataclass(slots=True)
class ToolCallDelta:
    """One piece of a tool call: the first carries id and name, later ones arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class PromptUsage:
    """The prompt's size, known before any content (a local model's prompt is counted
    before it is decoded): Anthropic's message_start reports it."""

    input_tokens: int
    cached_tokens: int = 0


@dataclass(slots=True)
class Finish:
    reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None


@dataclass(slots=True)
class WireEvent:
    """One upstream SSE event exactly as received, in its protocol.

    Yielded just before the events derived from it, so a client speaking the
    same protocol can be sent the upstream's bytes instead of a re-encoding.
    """

    protocol: str
    data: bytes


@dataclass(slots=True)
class Continued:
    """Another target takes over a stream broken off mid-answer; what follows
    continues the same answer. Protocol encoders leave passthrough here (the
    new upstream's own framing must not reach the client) and keep the
    stream's id and open content block."""

    backend: str


@dataclass(slots=True)
class MalformedEvent:
    """An upstream stream event that could not be parsed and was skipped (the
    stream goes on). Routing counts it and never passes it to an encoder."""

    detail: str


Event = (
    TextDelta | ThinkingDelta | ToolCallDelta | PromptUsage | Finish | WireEvent | Continued
    | MalformedEvent
)  # fmt: skip


class EventStream(AsyncIterable[Event], Protocol):
    """A stream of events its reader may close before the end: a backend's async
    generator, or routing's `Continuing`. Closing it releases what it holds
    (the upstream connection, the engine's sequence)."""

    def __anext__(self) -> Awaitable[Event]: ...

    def aclose(self) -> Awaitable[None]: ...


@dataclass(slots=True)
class ChatResult:
    """A whole answer: what a non-streaming call returns."""

    model: str
    content: list[Part]
    finish: Finish
    id: str | None = None
    # The upstream's response body and its protocol, for lossless passthrough.
    raw: dict[str, Any] | None = field(default=None, repr=False)
    raw_protocol: str | None = None


def is_content(event: Event) -> bool:
    """True once an event carries something the client must see.

    Routing holds back everything before the first content so that a failure
    before it can still fail over or become a proper HTTP error.
    """
    if isinstance(event, TextDelta):
        return bool(event.text)
    if isinstance(event, ThinkingDelta):
        return bool(event.text or event.signature)
    return isinstance(event, ToolCallDelta)
