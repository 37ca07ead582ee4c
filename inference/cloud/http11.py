"""A lean HTTP/1.1 keep-alive transport for `httpx.AsyncClient`.

httpx's default transport (httpcore on anyio) costs about 1 ms of CPU per
request here, and over 2 ms at 32 concurrent requests, because every request
walks every pooled connection several times under anyio locks: more than the
rest of the gateway together. This transport keeps httpx's client API
(requests, responses, timeouts, exceptions) and replaces only the connection
layer: asyncio protocols, llhttp's parser (httptools), one request per
connection at a time, idle connections reused newest first.

A response body that is not read to its end (an abandoned stream) closes its
connection, so the upstream sees the disconnect and stops generating.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator

import httptools
import httpx

Origin = tuple[bytes, bytes, int]

# Beyond this much unread body, stop reading the socket until the reader catches up.
HIGH_WATER = 256 * 1024


class _Connection(asyncio.Protocol):
    """One connection, one request at a time; parses what the server sends."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.in_use = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = True
        self.received_any = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.in_use:
            # Bytes while no request is out (a server's "408 Request Timeout", say):
            # they would be taken for the next request's answer. Not reusable.
            self.close()
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            self._wake()
            return
        if self.head_done and self._reads_until_close():
            self.complete = True  # no length and not chunked: the body ends with the connection
            self.keep_alive = False
            self._wake()
            return
        detail = "the server closed the connection"
        if not self.received_any:
            detail += " without sending a response"
        self._fail(httpx.RemoteProtocolError(f"{detail}{f': {exc}' if exc else ''}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []  # 100 Continue and friends: the real answer follows
            return
        self.status = status
        self.head_done = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an informational (1xx) response
        self.complete = True
        self.keep_alive = self.keep_alive and self._parser.should_keep_alive()
        self._wake()

    # used by the transport
    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.in_use = True
        self.transport.write(data)

    async def head(self, limit: float | None) -> None:
        while not self.head_done:
            await self._wait(limit)

    async def chunks(self, limit: float | None) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered < HIGH_WATER // 2 and self.transport:
                    self._paused = False
                    self.transport.resume_reading()
                yield chunk
            elif self.complete:
                return
            else:
                await self._wait(limit)

    def reusable(self, now: float, expiry: float) -> bool:
        transport = self.transport
        return (
            not self.closed
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since < expiry
        )

    def released(self) -> None:
        """The response was received in full: ready for the next request."""
        if self._paused and self.transport is not None:
            self.transport.resume_reading()  # an unread rest left it paused
        self.idle_since = time.monotonic()
        self.in_use = False
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _reads_until_close(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    async def _wait(self, limit: float | None) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        try:
            if limit is None:  # the caller's own limits apply (no timer per wait)
                await self._waiter
            else:
                async with asyncio.timeout(limit):
                    await self._waiter
        except TimeoutError:
            raise httpx.ReadTimeout(f"no data from the server for {limit:g}s") from None
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Body(httpx.AsyncByteStream):
    def __init__(self, transport: KeepAliveTransport, conn: _Connection, timeout: float | None):
        self._transport, self._conn, self._timeout = transport, conn, timeout
        self._done = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._conn.chunks(self._timeout)  # no extra generator hop per chunk

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._transport._finished(self._conn)


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections per origin, for one event loop."""

    def __init__(
        self,
        *,
        max_connections: int = 512,
        max_idle: int = 128,
        # Below the 5 s idle limit of common servers (uvicorn, Node, vLLM): a reuse
        # must not race the server closing the connection.
        keepalive_expiry: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._in_flight = 0
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._ssl = ssl_context
        self._open: set[_Connection] = set()
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet read to their end (or abandoned)."""
        return self._in_flight

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        origin = (request.url.raw_scheme, request.url.raw_host, request.url.port or 0)
        body = await request.aread()
        head = _request_head(request)
        if not self._slots.locked():
            await self._slots.acquire()  # free: no wait, no timer
        else:
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in time") from None
        self._in_flight += 1
        conn: _Connection | None = None
        try:
            conn = self._reuse(origin) or await self._connect(origin, timeouts.get("connect"))
            conn.send(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.send(body)
            await conn.head(timeouts.get("read"))
        except BaseException:
            if conn is not None:
                self._discard(conn)
            self._release()
            raise
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(self, conn, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()

    def _reuse(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the newest: the least likely to have been closed
            if conn.reusable(now, self._expiry):
                return conn
            self._discard(conn)
        return None

    async def _connect(self, origin: Origin, limit: float | None) -> _Connection:
        scheme, host, port = origin
        tls = scheme == b"https"
        if tls and self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        name = host.decode("ascii")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin),
                    name,
                    port or (443 if tls else 80),
                    ssl=self._ssl if tls else None,
                    server_hostname=name if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {name}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {name}:{port}: {exc}") from None
        self._open.add(conn)
        return conn

    def _release(self) -> None:
        self._in_flight -= 1
        self._slots.release()

    def _finished(self, conn: _Connection) -> None:
        self._release()
        if not (conn.complete and conn.keep_alive and not conn.closed) or self._closed:
            self._discard(conn)  # unread body (abandoned), or the server said close
            return
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= self._max_idle:
            self._discard(idle.pop(0))
        conn.released()
        idle.append(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)


def _request_head(request: httpx.Request) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    lines.extend(name + b": " + value for name, value in request.headers.raw)
    head = b"\r\n".join(lines)
    breaks = len(lines) - 1
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks or b"\0" in head:
        # A header value with a line break would split the request (httpx does
        # not check; h11 did). Where a key or header comes from configuration,
        # this is the last line of defence.
        raise httpx.LocalProtocolError("a request header holds a line break or NUL")
    return head + b"\r\n\r\n"


def proxy_configured() -> bool:
    """A proxy in the environment: then httpx's own transport, which knows proxies."""
    return any(os.environ.get(name) for name in _PROXY_VARIABLES)


_PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
