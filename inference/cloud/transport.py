"""HTTP mechanics shared by the cloud clients: pooled clients, timeouts, SSE."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import httpx
import orjson

from .. import jsonio
from ..base import Capabilities
from ..errors import UnsupportedFeature
from ..types import ChatRequest, ChatResult, Event, MalformedEvent, is_content
from .config import ProviderConfig
from .errors import UpstreamError, error_details, from_response, transport_error
from .pool import pool
from .sse import SSEEvent, SSEParser

logger = logging.getLogger(__name__)


def _remaining(deadline: float | None, limit: float) -> float:
    if deadline is None:
        return limit
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request's total time budget is spent")
    return min(limit, left)


def _spent(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline - 0.01


async def _send(
    config: ProviderConfig,
    path: str,
    body: dict[str, Any],
    deadline: float | None,
    headers: dict[str, str] | None,
) -> httpx.Response:
    """POST on the provider's pooled client, until the response head, under the
    first-byte timeout (capped by the request's deadline); transport failures
    become the provider's UpstreamError. The body is the caller's to read."""
    upstream = pool.get(config)
    request = upstream.request("POST", path, jsonio.dumps(body), headers)
    try:
        async with asyncio.timeout(_remaining(deadline, config.timeouts.first_byte)):
            return await upstream.send(request)
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        # A connection-level failure, or a silent server (or the budget spent first).
        failure = "connection"
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            failure = "budget" if _spent(deadline) else "first_byte_timeout"
        raise transport_error(config.name, exc, failure) from None


async def read_whole(
    config: ProviderConfig, response: httpx.Response, deadline: float | None
) -> bytes:
    """A whole answer's body, however long it takes within the request's budget,
    as long as data keeps coming: a gap longer than the stream-idle timeout is a
    stalled answer (its head came, its content did not: no retry, the next
    target), the budget spent is the end of the request. A body cut short is a
    broken answer of this deployment."""
    chunks: list[bytes] = []
    body = response.aiter_raw()
    try:
        while True:
            limit = config.timeouts.stream_idle
            try:
                async with asyncio.timeout(_remaining(deadline, limit)):
                    chunk = await anext(body, None)
            except TimeoutError:
                stalled = TimeoutError(f"the answer's body stalled: no data for {limit:g}s")
                failure = "budget" if _spent(deadline) else "first_token_timeout"
                raise transport_error(config.name, stalled, failure) from None
            if chunk is None:
                return b"".join(chunks)
            chunks.append(chunk)
    except (httpx.HTTPError, OSError) as exc:
        raise transport_error(config.name, exc, None) from None
    finally:
        await response.aclose()


async def post_json(
    config: ProviderConfig,
    path: str,
    body: dict[str, Any],
    deadline: float | None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    if deadline is None:  # a call outside a routed request: the provider's own budget
        deadline = time.monotonic() + config.timeouts.total
    response = await _send(config, path, body, deadline, headers)
    content = await read_whole(config, response, deadline)
    if response.status_code >= 400:
        raise from_response(config.name, response, *error_details(content))
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise malformed(config.name, "the response body is not JSON") from None
    if not isinstance(data, dict):
        raise malformed(config.name, "the response body is not a JSON object")
    return data


@asynccontextmanager
async def sse_stream(
    config: ProviderConfig,
    path: str,
    body: dict[str, Any],
    deadline: float | None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[TimedEvents]:
    """Open a streaming POST; yields its events, each read under a timeout.

    Until the first event the provider's first-byte timeout applies, then its
    stream-idle timeout; the request's deadline caps both.
    """
    response = await _send(config, path, body, deadline, headers)
    try:
        if response.status_code >= 400:
            content = await read_whole(config, response, deadline)
            raise from_response(config.name, response, *error_details(content))
        yield TimedEvents(config, response, deadline)
    finally:
        await response.aclose()


class TimedEvents:
    """A stream's events, each awaited under a limit.

    Until the first content the first-token limit applies (a model may send its
    preamble at once, then think long before its first token); after it, the
    stream-idle limit. The request's deadline caps both. The limit guards the
    reads from the network: events that arrived together are handed out
    without a timer each.
    """

    def __init__(
        self, config: ProviderConfig, response: httpx.Response, deadline: float | None
    ) -> None:
        self._config, self._deadline = config, deadline
        self._chunks = response.aiter_raw().__aiter__()
        self._parser = SSEParser()
        self._ready: deque[SSEEvent] = deque()
        self._ended = False
        self._limit = config.timeouts.first_token
        self._failure = "first_token_timeout"

    def content_started(self) -> None:
        self._limit = self._config.timeouts.stream_idle
        self._failure = "idle_timeout"

    def __aiter__(self) -> TimedEvents:
        return self

    async def __anext__(self) -> SSEEvent:
        while not self._ready:
            if self._ended:
                raise StopAsyncIteration
            limit = self._limit
            try:
                async with asyncio.timeout(_remaining(self._deadline, limit)):
                    chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._ended = True
                self._ready.extend(self._parser.close())
                continue
            except (httpx.HTTPError, TimeoutError, OSError) as exc:
                failure = None  # a broken stream
                if isinstance(exc, TimeoutError):
                    failure = "budget" if _spent(self._deadline) else self._failure
                    exc = TimeoutError(f"no event for {limit:g}s")
                raise transport_error(self._config.name, exc, failure) from None
            self._ready.extend(self._parser.feed(chunk))
        return self._ready.popleft()


def malformed(backend: str, detail: str) -> UpstreamError:
    return UpstreamError(
        f"provider {backend!r} sent a malformed response: {detail}",
        category="transient", backend=backend, status=502, code="upstream_malformed",
    )  # fmt: skip


class EventParser:
    """A stream's events as JSON objects. One that is not (a glitch upstream) is
    skipped: it comes back as a MalformedEvent and the stream goes on. Only a
    stream that keeps sending garbage (MAX_MALFORMED in a row) fails."""

    MAX_MALFORMED = 3

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._in_row = 0

    def parse(self, event: SSEEvent) -> dict[str, Any] | MalformedEvent:
        try:
            data = parse_event_json(self.backend, event)
        except UpstreamError as exc:
            self._in_row += 1
            if self._in_row >= self.MAX_MALFORMED:
                raise malformed(self.backend, "the stream cannot be parsed any more") from None
            logger.warning("%s (skipped)", exc.message)
            return MalformedEvent(exc.message)
        self._in_row = 0
        return data


def parse_event_json(backend: str, event: SSEEvent) -> dict[str, Any]:
    try:
        data = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        raise malformed(backend, f"an event is not JSON: {event.data[:80]!r}") from None
    if not isinstance(data, dict):
        raise malformed(backend, "an event is not a JSON object")
    return data


class CloudBackend:
    """What every cloud client shares: its provider, the model asked upstream, the budget.

    Subclasses say where requests go (`path`), how the internal form becomes
    their wire body (`body`) and how a whole answer is read back (`parse`).
    """

    protocol: ClassVar[str]
    path: ClassVar[str]

    counts_tokens: ClassVar[bool] = False  # has an exact count_tokens endpoint

    def __init__(self, config: ProviderConfig, model: str, deadline: float | None = None) -> None:
        self.config = config
        self.model = model
        self.deadline = deadline
        self.name = config.name
        self.capabilities = Capabilities(
            prefill=config.accepts_prefill, count_tokens=self.counts_tokens
        )

    async def count_tokens(self, request: ChatRequest) -> int:
        raise UnsupportedFeature(f"provider {self.name!r} has no token counting endpoint")

    def body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, data: dict[str, Any]) -> ChatResult:
        raise NotImplementedError

    def headers(self, request: ChatRequest) -> dict[str, str]:
        """Client headers this upstream gets too (none by default)."""
        return {}

    def read_stream(self, events: TimedEvents, request: ChatRequest) -> AsyncIterator[Event]:
        """The upstream's stream events -> internal events, ending with one Finish."""
        raise NotImplementedError

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        body = self.body(request, stream=True)
        headers = self.headers(request)
        async with sse_stream(self.config, self.path, body, self.deadline, headers) as events:
            started = False
            async for event in self.read_stream(events, request):
                if not started and is_content(event):
                    started = True
                    events.content_started()
                yield event

    async def complete(self, request: ChatRequest) -> ChatResult:
        body = self.body(request, stream=False)
        data = await post_json(self.config, self.path, body, self.deadline, self.headers(request))
        result = self.parse(data)
        result.raw, result.raw_protocol = data, self.protocol  # for same-protocol passthrough
        return result
