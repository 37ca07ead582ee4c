"""Anthropic providers: the Messages API (and its count_tokens) as a backend.

What goes over the wire and how it reads back is `inference.wire.anthropic`;
this client says where it goes, reads the stream, and classifies its failures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..types import ChatRequest, ChatResult, Event, MalformedEvent, WireEvent
from ..wire import anthropic as wire
from ..wire.common import MalformedResponse
from .errors import UpstreamError
from .sse import encode_sse
from .transport import CloudBackend, EventParser, TimedEvents, malformed, post_json


class AnthropicBackend(CloudBackend):
    protocol = "anthropic"
    path = "/messages"
    counts_tokens = True

    def body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        return wire.request_body(request, self.model, stream=stream)

    def parse(self, data: dict[str, Any]) -> ChatResult:
        try:
            return wire.result_of(data)
        except MalformedResponse as exc:
            raise malformed(self.name, str(exc)) from None

    def headers(self, request: ChatRequest) -> dict[str, str]:
        # The Anthropic API chose them (anthropic-beta): they come along unchanged.
        return request.headers

    async def count_tokens(self, request: ChatRequest) -> int:
        body = wire.count_body(request, self.model)
        data = await post_json(
            self.config, "/messages/count_tokens", body, self.deadline, self.headers(request)
        )
        return int(data.get("input_tokens") or 0)

    async def read_stream(self, events: TimedEvents, request: ChatRequest) -> AsyncIterator[Event]:
        decoder = wire.StreamDecoder()
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
            if kind == "message_stop":
                break
            for out in decoder.decode(kind, data):
                yield out
        finish = decoder.finish()
        if finish is None:
            raise malformed(self.name, "the stream ended before message_delta")
        yield finish


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
