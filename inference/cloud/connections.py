"""The cloud clients' connection layer: httpx-aiohttp's transport (aiohttp's
keep-alive pool under httpx's request and response types), one per provider.

Chosen by measurement over httpx's own transport and a hand-written one
(docs/design.md, "Plumbing"; `benchmarks/bench_overhead.py --transports`).
What this module adds to the library, each for a reason:

- aiohttp's session is made here: no cookie jar (one session serves every
  caller, so an upstream's cookies must not travel from one caller's request to
  the next), keep-alive connections retired before common servers' 5 s idle
  limit, httpx's CA bundle. A proxy from the environment (HTTPS_PROXY,
  NO_PROXY...) is looked up once per provider: aiohttp's own `trust_env` looks
  it up, and for a ~/.netrc in a worker thread, on every request (measured: a
  third more CPU per request).
- aiohttp's failures become the httpx exceptions httpx's own transport raises
  for them. httpx-aiohttp maps every `ClientConnectionError` to `ConnectTimeout`,
  a refused connection and a server hanging up included, and lets a malformed
  answer or a header with a line break out as aiohttp's own exceptions; the
  failover policy tells these apart (inference.cloud.errors).
- Requests in flight are counted (a request until its response is closed), so
  a provider's retired client is closed only once nothing uses it.

A response body that is not read to its end (an abandoned stream) closes its
connection, so the upstream sees the disconnect and stops generating.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

MAX_CONNECTIONS = 512  # per provider (and event loop)
# Below the 5 s idle limit of common servers (uvicorn, Node, vLLM): a reuse must
# not race the server closing the connection.
KEEPALIVE_EXPIRY = 4.0

_ssl_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:  # loading the CA bundle takes milliseconds: once per process
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


def environment_proxy(url: str) -> httpx.Proxy | None:
    """The proxy the environment sets for `url`, if any (as urllib reads it)."""
    target = httpx.URL(url)
    proxy = urllib.request.getproxies().get(target.scheme)
    if not proxy or urllib.request.proxy_bypass(target.host):
        return None
    return httpx.Proxy(proxy)


class Transport(AiohttpTransport):
    """A provider's pooled HTTP/1.1 connections (to `base_url`), for one event loop."""

    def __init__(self, base_url: str) -> None:
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, keepalive_expiry=KEEPALIVE_EXPIRY)
        # The session is made on first use, inside the loop it belongs to.
        super().__init__(
            verify=_tls(), limits=limits, proxy=environment_proxy(base_url), client=self._session
        )
        self.in_flight = 0

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_EXPIRY, ssl=_tls()
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        try:
            response = await super().handle_async_request(request)
        except (httpx.HTTPError, aiohttp.ClientError, ValueError) as exc:
            self.in_flight -= 1
            raise as_httpx_error(exc) from exc
        except BaseException:
            self.in_flight -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream, self)
        return response


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, transport: Transport) -> None:
        self._stream, self._transport = stream, transport
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except (httpx.HTTPError, aiohttp.ClientError) as exc:
            raise as_httpx_error(exc) from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport.in_flight -= 1
            await self._stream.aclose()


def as_httpx_error(exc: BaseException) -> BaseException:
    """aiohttp's failure (raw, or as httpx-aiohttp mapped it) as httpx's own transport says it."""
    cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) and exc.__cause__ else exc
    message = str(exc) or type(cause).__name__
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(f"the server closed the connection: {message}")
    if isinstance(cause, aiohttp.ClientError):  # reset, cut body, malformed answer
        return httpx.RemoteProtocolError(message)
    if isinstance(cause, ValueError):  # aiohttp refuses a header with a line break
        return httpx.LocalProtocolError(message)
    return exc
