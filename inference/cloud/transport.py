"""HTTP mechanics shared by the cloud clients: pooled clients, timeouts, SSE."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import httpx
import orjson

from .. import jsonio
from ..types import ChatRequest, ChatResult, Event, is_content
from .config import ProviderConfig
from .errors import UpstreamError, error_message, from_response, transport_error
from .pool import pool
from .sse import SSEEvent, SSEParser


def _remaining(deadline: float | None, limit: float) -> float:
    if deadline is None:
        return limit
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request's total time budget is spent")
    return min(limit, left)


async def _send(
    config: ProviderConfig,
    path: str,
    body: dict[str, Any],
    deadline: float | None,
    headers: dict[str, str] | None,
    *,
    stream: bool,
) -> httpx.Response:
    """POST on the provider's pooled client, until the response head under the
    first-byte timeout; transport failures become the provider's UpstreamError."""
    upstream = pool.get(config)
    request = upstream.request("POST", path, jsonio.dumps(body), headers)
    try:
        async with asyncio.timeout(_remaining(deadline, config.timeouts.first_byte)):
            return await upstream.client.send(request, stream=stream)
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        raise transport_error(config.name, exc) from None


async def post_json(
    config: ProviderConfig,
    path: str,
    body: dict[str, Any],
    deadline: float | None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = await _send(config, path, body, deadline, headers, stream=False)
    if response.status_code >= 400:
        raise from_response(config.name, response, error_message(response.content))
    try:
        data = orjson.loads(response.content)
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
    response = await _send(config, path, body, deadline, headers, stream=True)
    try:
        if response.status_code >= 400:
            await response.aread()
            raise from_response(config.name, response, error_message(response.content))
        yield TimedEvents(config, response, deadline)
    finally:
        await response.aclose()


class TimedEvents:
    """A stream's events, each awaited under a limit.

    Until the first content the first-byte limit applies (a model may send its
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
        self._limit = config.timeouts.first_byte

    def content_started(self) -> None:
        self._limit = self._config.timeouts.stream_idle

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
                if isinstance(exc, TimeoutError):
                    exc = TimeoutError(f"no event for {limit:g}s")
                raise transport_error(self._config.name, exc) from None
            self._ready.extend(self._parser.feed(chunk))
        return self._ready.popleft()


def malformed(backend: str, detail: str) -> UpstreamError:
    return UpstreamError(
        f"provider {backend!r} sent a malformed response: {detail}",
        category="transient", backend=backend, status=502, code="upstream_malformed",
    )  # fmt: skip


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

    def __init__(self, config: ProviderConfig, model: str, deadline: float | None = None) -> None:
        self.config = config
        self.model = model
        self.deadline = deadline
        self.name = config.name

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

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
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
