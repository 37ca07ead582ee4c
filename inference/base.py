"""The one interface every backend implements: local MLX and cloud providers alike."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .types import (
    ChatRequest,
    ChatResult,
    Event,
    EventStream,
    Finish,
    Part,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCallDelta,
    ToolCallPart,
    Usage,
    is_content,
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, declared rather than probed, so routing can decide
    before it asks (say, which target may continue a broken stream)."""

    streaming: bool = True
    # Continues a trailing assistant message instead of answering after it.
    prefill: bool = False
    count_tokens: bool = False  # an exact count of its own (else: an estimate)
    images: bool = True
    tools: bool = True


@runtime_checkable
class Backend(Protocol):
    """A place that can answer a chat request.

    `stream` is an async generator of events ending with exactly one `Finish`;
    closing it early (client gone) must release whatever it holds upstream.
    Failures are raised as `inference.errors.GatewayError` subclasses.
    `count_tokens` is called only when `capabilities.count_tokens` says so.
    """

    name: str
    capabilities: Capabilities

    def stream(self, request: ChatRequest) -> AsyncGenerator[Event, None]: ...

    async def complete(self, request: ChatRequest) -> ChatResult: ...

    async def count_tokens(self, request: ChatRequest) -> int: ...


class ResultBuilder:
    """Folds a stream of events into a whole answer.

    Non-streaming calls and the tests that compare streamed with non-streamed
    answers use the same fold, so the two can never drift apart.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.parts: list[Part] = []
        self._tool_calls: dict[int, ToolCallPart] = {}
        self.finish: Finish | None = None

    def add(self, event: Event) -> None:
        last = self.parts[-1] if self.parts else None
        if isinstance(event, TextDelta):
            if isinstance(last, TextPart):
                last.text += event.text
            elif event.text:
                self.parts.append(TextPart(event.text))
        elif isinstance(event, ThinkingDelta):
            if isinstance(last, ThinkingPart):
                last.text += event.text
            elif event.text or event.signature:
                last = ThinkingPart(event.text)
                self.parts.append(last)
            if event.signature and isinstance(last, ThinkingPart):
                last.signature = event.signature
        elif isinstance(event, ToolCallDelta):
            call = self._tool_calls.get(event.index)
            if call is None:
                call = ToolCallPart(id=event.id or "", name=event.name or "", arguments="")
                self._tool_calls[event.index] = call
                self.parts.append(call)
            if event.id:
                call.id = event.id
            if event.name:
                call.name = event.name
            call.arguments += event.arguments
        elif isinstance(event, Finish):
            self.finish = event

    def result(self, response_id: str | None = None) -> ChatResult:
        finish = self.finish or Finish(reason="stop", usage=Usage())
        return ChatResult(model=self.model, content=self.parts, finish=finish, id=response_id)


async def prime(events: EventStream) -> list[Event]:
    """Read events up to the first content (or the end) before any byte is sent.

    A failure here propagates as an exception, so the caller can still fail
    over or answer with a proper HTTP error instead of a broken 200 stream.
    """
    held: list[Event] = []
    try:
        async for event in events:
            held.append(event)
            if is_content(event) or isinstance(event, Finish):
                break
    except BaseException:
        await events.aclose()
        raise
    return held


async def collect(model: str, events: AsyncIterator[Event]) -> ChatResult:
    builder = ResultBuilder(model)
    async for event in events:
        builder.add(event)
    return builder.result()
