"""Answering a chat request, whole or streamed; once content is sent, a failure
is said in-band, never a clean end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any, Protocol

from django.http import HttpResponse, StreamingHttpResponse

from inference import jsonio
from inference.errors import EngineError, GatewayError
from inference.types import ChatRequest, ChatResult, Event, EventStream
from routing import continuation, failover

from .context import RequestContext, finish
from .errors import Protocol as ErrorProtocol
from .errors import error_body

logger = logging.getLogger(__name__)


class Encoder(Protocol):
    """What turns a stream's events, and an error after its 200, into bytes."""

    def encode(self, event: Event) -> bytes: ...

    def error(self, error: GatewayError) -> bytes: ...


class WireEncoder(Protocol):
    """A wire protocol's stream encoder (`inference.wire`): it frames an in-band
    error's envelope, which `gateway.errors` builds."""

    @property
    def protocol(self) -> ErrorProtocol: ...  # read-only: an encoder's class names one

    def encode(self, event: Event) -> bytes: ...

    def error(self, body: dict[str, Any]) -> bytes: ...


class _InBand:
    """A wire encoder with errors in the caller's envelope."""

    def __init__(self, wire: WireEncoder) -> None:
        self._wire = wire
        self.encode: Callable[[Event], bytes] = wire.encode  # per event: no extra call

    def error(self, error: GatewayError) -> bytes:
        return self._wire.error(error_body(error, self._wire.protocol))


async def _body(
    held: list[Event], events: EventStream, encoder: Encoder, ctx: RequestContext,
    started: list[bool],
) -> AsyncGenerator[bytes, None]:  # fmt: skip
    started.append(True)
    label = ctx.served.backend if ctx.served else "?"
    try:
        for event in held:
            ctx.observe(event)
            yield encoder.encode(event)
        # Let the server put the first content on the wire now: what the upstream
        # sent along with it is already read, and relaying it would otherwise run
        # to its end before the event loop turns to writing. The socket's writer
        # runs in the turn after this task's wake-up, hence two turns.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        async for event in events:
            ctx.observe(event)
            yield encoder.encode(event)
    except GatewayError as exc:
        # Content was already sent with a 200: say so in-band, never a clean end.
        logger.warning("stream from %s failed after content: %s", label, exc.message)
        ctx.fail(exc, exc.status)
        yield encoder.error(exc)
    except Exception as exc:
        logger.exception("stream from %s failed after content", label)
        error = EngineError(f"stream failed: {type(exc).__name__}")
        ctx.fail(error, error.status)
        yield encoder.error(error)
    except asyncio.CancelledError:
        if ctx.interrupted is None:  # the client went away (cancelled): recorded as such
            ctx.status, ctx.error_type = 499, "client_disconnected"
            raise
        # A graceful shutdown's grace is over: say so in-band, then end the stream.
        ctx.fail(ctx.interrupted, 503)
        ctx.output_tokens = ctx.output_tokens or ctx.content_events
        yield encoder.error(ctx.interrupted)
    except GeneratorExit:
        # Closed before its end (the server stopped reading: the client is gone).
        # A closed generator must not yield again: recorded, then it ends.
        ctx.status, ctx.error_type = 499, "client_disconnected"
        raise
    finally:
        await events.aclose()
        finish(ctx)


class _Stream:
    """An SSE response's body that owns its event source: however the response
    ends, the source is closed, and with it the in-flight count and any
    half-open breaker token it holds.

    The body's generator closes it in its `finally`. Two ways it would not run
    (or only when the garbage collector gets to it): a generator never started
    (the client left before the first byte), and one left suspended (Django's
    handler closes only its own wrapper around the body). `close()`, which
    Django calls on a streaming response's content when the response is
    closed (as a WSGI server would), closes either on the event loop.
    """

    def __init__(
        self, held: list[Event], events: EventStream, encoder: Encoder,
        ctx: RequestContext,
    ) -> None:  # fmt: skip
        self._events, self._ctx = events, ctx
        self._started: list[bool] = []  # the generator's first step appends to it
        self._body = _body(held, events, encoder, ctx, self._started)
        self._loop = asyncio.get_running_loop()
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body

    def close(self) -> None:
        """From the loop's thread or a worker thread, once the response is sent
        or abandoned (never while the body runs)."""
        if self._closed or self._loop.is_closed():
            return
        self._closed = True
        if self._started:
            ending = _aclose(self._body)  # a no-op for a body that ran to its end
        else:
            if not self._ctx.finished:
                self._ctx.status, self._ctx.error_type = 499, "client_disconnected"
            ending = _release(self._events, self._ctx)
        self._loop.call_soon_threadsafe(_spawn, ending)


_releasing: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak refs)


def _spawn(ending: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(ending)
    _releasing.add(task)
    task.add_done_callback(_releasing.discard)


async def _aclose(body: AsyncGenerator[bytes, None]) -> None:
    try:
        await body.aclose()
    except Exception:
        logger.exception("closing a stream's body failed")


async def _release(events: EventStream, ctx: RequestContext | None = None) -> None:
    """Close the event source; with `ctx`, also close the request's record (on a
    failure path the caller's error handling records and closes it)."""
    try:
        await events.aclose()
    finally:
        if ctx is not None:
            finish(ctx)


async def sse_response(
    held: list[Event],
    events: EventStream,
    encoder: Encoder,
    ctx: RequestContext,
    headers: dict[str, str] | None = None,
) -> StreamingHttpResponse:
    """The stream's response; the source is closed here if the response cannot be made."""
    try:
        response = StreamingHttpResponse(
            _Stream(held, events, encoder, ctx), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        for key, value in (headers or {}).items():
            response[key] = value
    except Exception:
        await _release(events)
        raise
    return response


async def answer(
    ctx: RequestContext,
    chat: ChatRequest,
    render: Callable[[ChatResult, str], dict[str, Any]],
    encoder: Callable[[str], WireEncoder],
) -> HttpResponse | StreamingHttpResponse:
    """Route the request and answer in the client's protocol (`render` / `encoder`)."""
    if not chat.stream:
        result, served = await failover.complete(chat)
        ctx.served = served
        ctx.observe(result.finish)
        finish(ctx)
        body = jsonio.dumps(render(result, served.model))
        response = HttpResponse(body, content_type="application/json")
        for key, value in served.headers().items():
            response[key] = value
        return response
    held, events, served = await continuation.stream(chat)
    ctx.served = served
    try:
        encode = _InBand(encoder(served.model))
    except Exception:
        await _release(events)
        raise
    return await sse_response(held, events, encode, ctx, served.headers())
