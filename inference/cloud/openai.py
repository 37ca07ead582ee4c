"""OpenAI-compatible providers: the chat-completions endpoint as a backend.

What goes over the wire and how it reads back is `inference.wire.openai`; this
client says where it goes, reads the stream, and classifies its failures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from ..types import ChatRequest, ChatResult, Event, MalformedEvent, WireEvent
from ..wire import openai as wire
from ..wire.common import MalformedResponse
from .errors import UpstreamError
from .sse import encode_sse
from .transport import CloudBackend, EventParser, TimedEvents, malformed

OFFICIAL_HOST = "api.openai.com"


class OpenAIBackend(CloudBackend):
    """A chat-completions endpoint: OpenAI itself or any compatible server."""

    protocol = "openai"
    path = "/chat/completions"
    # All system text first, in one message: only where the chat template is
    # known to need it (the gateway's model servers); any other server gets
    # the messages in the client's order, as the protocol allows.
    merge_system = False

    def body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        official = self.config.base_url.partition("://")[2].startswith(OFFICIAL_HOST)
        return wire.request_body(
            request, self.model, stream=stream, official=official, merge_system=self.merge_system
        )

    def parse(self, data: dict[str, Any]) -> ChatResult:
        try:
            return wire.result_of(data)
        except MalformedResponse as exc:
            raise malformed(self.name, str(exc)) from None

    async def read_stream(self, events: TimedEvents, request: ChatRequest) -> AsyncIterator[Event]:
        decoder = wire.StreamDecoder(request)
        parser = EventParser(self.name)
        async for event in events:
            if event.data.strip() == "[DONE]":
                if decoder.reason is not None:
                    # A truncated answer is said below, before the client sees [DONE].
                    yield WireEvent("openai", encode_sse(event))
                break
            chunk = parser.parse(event)
            if isinstance(chunk, MalformedEvent):
                yield chunk
                continue
            if "error" in chunk:
                raise _stream_error(self.name, chunk["error"])
            # Relayed only once known good: a broken event becomes our error.
            for out in decoder.decode(chunk, partial(encode_sse, event)):
                yield out
        finish = decoder.finish()
        if finish is None:
            # A clean end without a finish reason is still a truncated answer.
            raise malformed(self.name, "the stream ended without a finish reason")
        yield finish


def _stream_error(backend: str, error: Any) -> UpstreamError:
    message = error.get("message") if isinstance(error, dict) else str(error)
    return UpstreamError(
        f"provider {backend!r} reported an error mid-stream: {message}",
        category="transient", backend=backend, status=502, code="upstream_stream_error",
    )  # fmt: skip
