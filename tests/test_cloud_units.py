"""Unit tests of the cloud plumbing: SSE parsing, error classes, breakers."""

from __future__ import annotations

import httpx
import pytest

from inference.cloud.errors import (
    UpstreamError,
    from_response,
    retry_after_seconds,
    transport_error,
)
from inference.cloud.sse import SSEEvent, SSEParser


async def read(*parts: bytes) -> list[SSEEvent]:
    """The events a stream arriving in these pieces parses into."""
    parser = SSEParser()
    events = [event for part in parts for event in parser.feed(part)]
    return events + parser.close()


async def test_sse_multiline_comments_events_and_split_chunks() -> None:
    events = await read(
        b": keep-alive\n\n",
        b"event: message_start\nda",
        b'ta: {"a":\ndata: 1}\n\n',
        b"data: second\r\n\r\ndata: [DONE]",  # no trailing blank line
    )
    assert events == [
        SSEEvent('{"a":\n1}', "message_start"),
        SSEEvent("second"),
        SSEEvent("[DONE]"),
    ]


async def test_sse_utf8_split_across_chunks() -> None:
    text = "héllo ☃".encode()
    events = await read(b"data: " + text[:3], text[3:] + b"\n\n")
    assert events[0].data == "héllo ☃"


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, request=httpx.Request("POST", "http://x"))


@pytest.mark.parametrize(
    ("status", "category", "client_status"),
    [(500, "transient", 502), (503, "transient", 503), (529, "transient", 503),
     (429, "transient", 429), (401, "config", 502), (403, "config", 502), (404, "config", 502),
     (400, "client", 400), (422, "client", 422), (413, "client", 413)],
)  # fmt: skip
def test_upstream_statuses_are_classified(status: int, category: str, client_status: int) -> None:
    error = from_response("p", response(status), "boom")
    assert error.category == category
    assert error.status == client_status
    assert error.retryable == (category == "transient")
    assert error.unhealthy == (category == "transient")
    assert error.fails_over == (category != "client")


def test_context_length_and_retry_after() -> None:
    error = from_response("p", response(400), "This model's maximum context length is 8192")
    assert error.code == "context_length_exceeded"
    anthropic_wording = "prompt is too long: 200001 tokens > 200000 maximum"
    assert from_response("p", response(400), anthropic_wording).code == "context_length_exceeded"
    assert from_response("p", response(400), "max_tokens: Field required").code is None
    assert retry_after_seconds(response(429, {"retry-after": "3"}).headers) == 3
    assert retry_after_seconds(response(429, {"retry-after-ms": "1500"}).headers) == 1.5
    assert retry_after_seconds(response(429).headers) is None
    assert transport_error("p", httpx.ReadTimeout("x")).status == 504
    assert transport_error("p", httpx.ConnectError("refused")).status == 502


async def test_sse_crlf_split_across_chunks_ends_one_line() -> None:
    events = await read(b'data: {"a":\r', b"\ndata: 1}\r", b"\n\r\n", b"data: last\r")
    assert events == [SSEEvent('{"a":\n1}'), SSEEvent("last")]


def test_a_malformed_event_is_skipped_until_the_stream_is_garbage() -> None:
    from inference.cloud.transport import EventParser
    from inference.types import MalformedEvent

    parser = EventParser("p")
    assert isinstance(parser.parse(SSEEvent("{not json")), MalformedEvent)  # skipped
    assert parser.parse(SSEEvent('{"a": 1}')) == {"a": 1}  # and the stream goes on
    for _ in range(EventParser.MAX_MALFORMED - 1):
        assert isinstance(parser.parse(SSEEvent("garbage")), MalformedEvent)
    with pytest.raises(UpstreamError, match="cannot be parsed any more"):
        parser.parse(SSEEvent("garbage"))
