"""A streamed answer's body (gateway/streaming.py) and its event source: the
source (which holds the in-flight count and any half-open breaker token) is
closed whether the body runs to its end, is closed part-way, or never starts.
End to end, the same paths are tests/test_e2e_breakers.py's probe whose client
leaves and the edge shutdown tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.record import RequestContext
from gateway.streaming import sse_response
from inference.errors import BackendUnavailable, GatewayError
from inference.types import Event, TextDelta


class _Source:
    """An event source that, like routing.failover's, holds something until closed."""

    def __init__(self) -> None:
        self.held = False
        self.closed = asyncio.Event()

    async def events(self) -> AsyncIterator[Event]:
        self.held = True  # failover: the in-flight count begins, a probe token is taken
        try:
            for word in ("one", "two", "three"):
                yield TextDelta(word)
        finally:
            self.held = False
            self.closed.set()


class _Encoder:
    def encode(self, event: Event) -> bytes:
        return f"{getattr(event, 'text', '')}\n".encode()

    def error(self, error: GatewayError) -> bytes:
        return f"error: {error.message}\n".encode()


async def _started(source: _Source) -> AsyncIterator[Event]:
    """What failover.stream hands over: a source already running (its first event read)."""
    events = source.events()
    first = await anext(events)
    assert source.held and isinstance(first, TextDelta)
    return events


def test_a_body_never_started_still_closes_its_source() -> None:
    async def scenario() -> tuple[_Source, RequestContext]:
        source, ctx = _Source(), RequestContext(protocol="openai", endpoint="chat.completions")
        response = await sse_response([], await _started(source), _Encoder(), ctx)
        # The client left before the first byte: the server closes the response
        # without ever iterating it (from a worker thread, as Django's handler does).
        await asyncio.to_thread(response.close)
        await asyncio.wait_for(source.closed.wait(), 10)
        return source, ctx

    source, ctx = asyncio.run(scenario())
    assert not source.held
    assert ctx.finished and ctx.status == 499 and ctx.error_type == "client_disconnected"


def test_a_body_closed_part_way_in_a_shutdown_ends_without_yielding_again() -> None:
    async def scenario() -> tuple[_Source, RequestContext, list[bytes]]:
        source, ctx = _Source(), RequestContext(protocol="openai", endpoint="chat.completions")
        ctx.interrupted = BackendUnavailable("the gateway is shutting down")
        response = await sse_response([], await _started(source), _Encoder(), ctx)
        body = aiter(response._iterator)  # the body generator itself
        got = [await anext(body)]
        # Closed at its yield (GeneratorExit): yielding the shutdown's in-band
        # error then would raise "async generator ignored GeneratorExit".
        await body.aclose()  # type: ignore[attr-defined]
        assert source.closed.is_set()
        return source, ctx, got

    source, ctx, got = asyncio.run(scenario())
    assert got == [b"two\n"]
    assert not source.held
    assert ctx.finished and ctx.status == 499


def test_a_body_left_suspended_by_the_server_is_closed_with_the_response() -> None:
    async def scenario() -> tuple[_Source, RequestContext, list[bytes]]:
        source, ctx = _Source(), RequestContext(protocol="openai", endpoint="chat.completions")
        response = await sse_response([], await _started(source), _Encoder(), ctx)
        # As Django's handler sends it: aclosing() its own wrapper, which leaves
        # the body suspended; then the response is closed.
        async with contextlib.aclosing(aiter(response)) as content:
            got = [await anext(content)]
        assert not source.closed.is_set()
        await asyncio.to_thread(response.close)
        await asyncio.wait_for(source.closed.wait(), 10)
        return source, ctx, got

    source, ctx, got = asyncio.run(scenario())
    assert got == [b"two\n"]
    assert not source.held and ctx.finished and ctx.status == 499


def test_a_body_read_to_its_end_closes_its_source_once() -> None:
    async def scenario() -> tuple[_Source, RequestContext, list[bytes]]:
        source, ctx = _Source(), RequestContext(protocol="openai", endpoint="chat.completions")
        response = await sse_response([], await _started(source), _Encoder(), ctx)
        chunks = [chunk async for chunk in response]
        response.close()
        return source, ctx, chunks

    source, ctx, chunks = asyncio.run(scenario())
    assert chunks == [b"two\n", b"three\n"]
    assert not source.held and ctx.finished and ctx.status == 200
