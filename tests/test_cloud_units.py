"""Unit tests of the cloud plumbing: SSE parsing, error classes, breakers."""

from __future__ import annotations

import asyncio

import httpx
import pybreaker
import pytest

from inference.cloud.errors import from_response, retry_after_seconds, transport_error
from inference.cloud.sse import SSEEvent, SSEParser
from routing.breakers import Breakers, BreakerSettings


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


async def test_breaker_counts_opens_probes_and_closes() -> None:
    box = Breakers()
    config = BreakerSettings(fail_max=3, reset_timeout=0.2)
    assert await box.admit("b", config)
    for _ in range(2):
        await box.record("b", config, ok=False)
    assert box.breaker("b", config).fail_counter == 2
    await box.record("b", config, ok=True)  # a success resets the count
    assert box.breaker("b", config).fail_counter == 0
    for _ in range(3):
        await box.record("b", config, ok=False)
    assert box.state("b") == pybreaker.STATE_OPEN
    assert not await box.admit("b", config)
    await asyncio.sleep(0.25)
    probe = await box.admit("b", config)
    assert probe is not None and probe.probe  # the probe
    assert box.state("b") == pybreaker.STATE_HALF_OPEN
    assert not await box.admit("b", config)  # only one probe at a time
    await box.record("b", config, ok=False, probe=True)
    assert box.state("b") == pybreaker.STATE_OPEN
    await asyncio.sleep(0.25)
    assert await box.admit("b", config)
    await box.record("b", config, ok=True, probe=True)
    assert box.state("b") == pybreaker.STATE_CLOSED
    admitted = await box.admit("b", config)
    assert admitted is not None and not admitted.probe


async def test_sse_crlf_split_across_chunks_ends_one_line() -> None:
    events = await read(b'data: {"a":\r', b"\ndata: 1}\r", b"\n\r\n", b"data: last\r")
    assert events == [SSEEvent('{"a":\n1}'), SSEEvent("last")]


async def test_a_probe_holds_its_token_for_its_whole_budget() -> None:
    """A slow probe must not let a second one through when the reset timeout passes."""
    box = Breakers()
    config = BreakerSettings(fail_max=1, reset_timeout=0.1)
    await box.record("b", config, ok=False)
    await asyncio.sleep(0.15)
    assert await box.admit("b", config, hold=5.0)  # the probe, with 5 s to answer
    await asyncio.sleep(0.15)  # past the reset timeout, the probe still running
    assert not await box.admit("b", config, hold=5.0)
    await box.record("b", config, ok=None)  # another request's outcome: the token stays
    assert not await box.admit("b", config, hold=5.0)
    await box.record("b", config, ok=None, probe=True)  # no verdict (budget spent): token back
    assert await box.admit("b", config)
    await box.record("b", config, ok=True, probe=True)
    assert box.state("b") == pybreaker.STATE_CLOSED


async def test_breakers_fall_back_to_this_process_when_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from .conftest import free_port

    box = Breakers(f"redis://127.0.0.1:{free_port()}/0")  # a port nobody listens on
    config = BreakerSettings(fail_max=2, reset_timeout=30)
    assert await box.admit("b", config)
    await box.record("b", config, ok=False)
    await box.record("b", config, ok=False)
    assert not await box.admit("b", config)  # counted, in memory, and opened
    assert "this process decides alone" in caplog.text


def test_backoff_doubles_with_jitter_and_honours_the_caps() -> None:
    from inference.cloud.config import RetryPolicy
    from inference.cloud.errors import UpstreamError
    from routing.failover import _backoff

    policy = RetryPolicy(max_retries=5, backoff=0.5, max_backoff=3.0, retry_after_cap=2.0)
    plain = UpstreamError("x", category="transient")
    for attempt, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (4, 3.0)]:
        delays = {_backoff(plain, attempt, policy) for _ in range(50)}
        assert all(base * 0.5 <= d <= base for d in delays), (attempt, delays)
        assert len(delays) > 40  # jittered: retries from many clients spread out
    told = UpstreamError("x", category="transient", retry_after=10.0)
    assert _backoff(told, 0, policy) == 2.0  # Retry-After, up to the cap
    assert _backoff(UpstreamError("x", category="transient", retry_after=0.3), 0, policy) == 0.3


async def test_a_redis_outage_after_start_still_counts_failures(tmp_path) -> None:
    """pybreaker's Redis storage would go on with defaults (closed, no failures)."""
    from .conftest import redis_server

    with redis_server(tmp_path) as url:
        box = Breakers(url)
        config = BreakerSettings(fail_max=2, reset_timeout=30)
        assert await box.admit("r", config)  # created while Redis was up
    await box.record("r", config, ok=False)
    await box.record("r", config, ok=False)
    assert not await box.admit("r", config)  # opened, in this process
