"""Mid-stream continuation: a stream broken off after content, finished by another target.

When the serving target fails after the client got part of the answer (a cut,
a reset, a stall past stream-idle, an error event), the walk goes on down the
chain with the original request plus the text so far as a trailing assistant
message (prefill), and only the continuation is streamed. The client sees one
stream: one id, one finish reason, one terminator, and usage summed over the
targets.

Only targets that declare `capabilities.prefill` (and have not refused one,
see `failover.refuses_prefill`) are asked. Never continued: a stream that broke
inside a tool call or that carried thinking blocks (a partial tool call or a
signed thinking block cannot be resumed safely), and a failure the policy does
not continue (the caller's own error, a spent budget). Those end with the
in-band error of the original failure, as does a stream no target could finish.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import replace

from inference.base import Backend
from inference.cloud.config import RetryPolicy
from inference.errors import GatewayError
from inference.types import (
    ChatRequest,
    Continued,
    Event,
    EventStream,
    Finish,
    MalformedEvent,
    Message,
    PromptUsage,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
    WireEvent,
)

from .backends import backend_for, breaker_name
from .failover import Walk, as_gateway_error, open_stream, outcome_of, refuses_prefill
from .policy import Action, Count, classify, decide
from .resolution import Hop
from .served import Served

_NO_RETRIES = RetryPolicy(max_retries=0)  # a continuation is one try per target

logger = logging.getLogger(__name__)


async def stream(request: ChatRequest) -> tuple[list[Event], EventStream, Served]:
    """The first content (held back) and the rest of the stream, once a target answered.

    The rest is a `Continuing` stream: the serving target's breaker hears how it
    ended, and a failure after content may be taken over by another target.
    """

    async def call(
        backend: Backend, hop: Hop, walk: Walk
    ) -> tuple[list[Event], EventStream]:
        return await open_stream(request, backend, hop, walk)

    walk = await Walk.start(request.model)
    held, events = await walk.run(call)
    rest = Continuing(request, walk, held, events)  # counts what it skips of `held`
    held = [event for event in held if not isinstance(event, MalformedEvent)]
    return held, rest, walk.served


class Continuing:
    """The rest of a stream. However it ends (its end, a failure, the client
    leaving during it or before reading any of it) the serving target's breakers
    hear the outcome once, and its upstream stream is closed."""

    def __init__(
        self, request: ChatRequest, walk: Walk, held: list[Event], events: EventStream
    ) -> None:
        self._request, self._walk, self._events = request, walk, events
        self._text: list[str] = []  # the answer so far, as the client got it
        self._chunks = 0  # content events of the target now serving
        self._resumable = True  # no tool call, no thinking so far
        self._prior = Usage()  # what the targets before this one generated
        self._input = 0  # the serving target's prompt size, when it said
        self._continued = False
        self._done = False
        for event in held:
            self._track(event)
            if isinstance(event, MalformedEvent):
                walk.served.malformed_events += 1

    def __aiter__(self) -> Continuing:
        return self

    async def __anext__(self) -> Event:
        while True:
            try:
                event = await anext(self._events)
            except StopAsyncIteration:
                await self._finish(True)
                raise
            except Exception as exc:
                await self._take_over(exc)
                return Continued(self._walk.served.attempts[-1].backend)
            if isinstance(event, MalformedEvent):
                self._walk.served.malformed_events += 1  # skipped; the stream goes on
                continue
            self._track(event)
            if not self._continued:
                return event
            if isinstance(event, WireEvent | PromptUsage):
                continue  # the new upstream's framing: the encoder re-frames its content
            if isinstance(event, Finish):
                usage = Usage(
                    self._prior.input_tokens + event.usage.input_tokens,
                    self._prior.output_tokens + event.usage.output_tokens,
                )
                return replace(event, usage=usage)
            return event

    async def aclose(self) -> None:
        await self._finish(True)  # a client that leaves after content: the backend answered

    def _track(self, event: Event) -> None:
        if isinstance(event, TextDelta) and event.text:
            self._text.append(event.text)
            self._chunks += 1
        elif isinstance(event, ThinkingDelta | ToolCallDelta):
            self._resumable = False
            self._chunks += 1
        elif isinstance(event, PromptUsage):
            self._input = event.input_tokens

    async def _take_over(self, exc: Exception) -> None:
        """Hand the stream to the next target that can continue it, or raise the
        original failure (said in-band by the caller)."""
        walk = self._walk
        error = as_gateway_error(exc, walk.served.backend, walk.route.requested)
        failure = classify(error, content_sent=True)
        decision = decide(failure, 0, _NO_RETRIES)
        attempt = walk.served.attempts[-1]
        attempt.outcome = f"{outcome_of(error, failure)} after {self._chunks} chunks"
        await self._close_upstream()
        await walk.settle(
            None if decision.count is Count.NONE else False,
            provider_too=decision.count is Count.PROVIDER,
        )
        text = "".join(self._text)
        if decision.action is not Action.CONTINUE or not self._resumable or not text.strip():
            raise error
        # What the broken target generated, one token per content chunk (the
        # granularity both APIs stream at); its input when it reported it.
        self._prior = Usage(
            self._prior.input_tokens + self._input, self._prior.output_tokens + self._chunks
        )
        request = self._prefilled(text)
        hops = [(i, hop) for i, hop in walk.after_serving() if _can_continue(hop, walk)]

        async def call(
            backend: Backend, hop: Hop, walk: Walk
        ) -> tuple[list[Event], EventStream]:
            return await open_stream(request, backend, hop, walk)

        try:
            held, events = await walk.run(call, hops, prefill=True)
        except GatewayError:
            logger.warning(
                "stream for %s broke after content and no target could continue it: %s",
                walk.route.requested,
                error.message,
            )
            raise error from None
        logger.info(
            "stream for %s continued by %s after %s",
            walk.route.requested, walk.served.attempts[-1].backend, attempt.outcome,
        )  # fmt: skip
        walk.served.continuations += 1
        self._events, self._continued = _replay(held, events), True
        self._chunks, self._input = 0, 0

    def _prefilled(self, text: str) -> ChatRequest:
        request = self._request
        # Anthropic refuses a prefill that ends in whitespace; the model adds it back.
        prefill = Message("assistant", [TextPart(text.rstrip())])
        max_tokens = request.max_tokens
        if max_tokens is not None:
            max_tokens = max(1, max_tokens - self._prior.output_tokens)
        return replace(
            request,
            messages=[*request.messages, prefill],
            max_tokens=max_tokens,
            raw=None,  # the client's body lacks the prefill: built from the internal form
            continuation=True,
        )

    async def _close_upstream(self) -> None:
        try:
            await self._events.aclose()
        except Exception:
            logger.debug("closing a broken stream failed", exc_info=True)

    async def _finish(self, ok: bool | None) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self._events.aclose()
        finally:
            await self._walk.settle(ok)


def _can_continue(hop: Hop, walk: Walk) -> bool:
    """Declared able to continue a prefill, and has not refused one lately."""
    if refuses_prefill(breaker_name(hop)):
        return False
    try:
        backend = backend_for(hop, walk.snapshot, walk.deadline)
    except GatewayError:  # an unusable key: the chain walk already said so
        return False
    return backend.capabilities.prefill


async def _replay(held: list[Event], events: EventStream) -> AsyncGenerator[Event, None]:
    """The continuing target's first content (read ahead), then the rest of it."""
    try:
        for event in held:
            yield event
        async for event in events:
            yield event
    finally:
        await events.aclose()
