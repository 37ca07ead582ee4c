"""One keep-alive `httpx.AsyncClient` per provider (and event loop), reused.

Each provider's requests are prepared once: its URLs parsed, its headers
(the decrypted key among them) normalised. A request then costs httpx only
what it must do per request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from .config import ProviderConfig
from .http11 import KeepAliveTransport, proxy_configured

logger = logging.getLogger(__name__)

USER_AGENT = "llm-gateway"
# Per provider and event loop: the lean transport and httpx's own keep to the same.
LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128)


class Upstream:
    """A provider's pooled client and its prepared request parts."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._transport = _transport()
        self.client = _Client(
            # Read limits are the callers' (first byte, stream idle, the request's
            # budget), applied around each wait; httpx keeps the connect limit.
            timeout=httpx.Timeout(None, connect=config.timeouts.connect),
            transport=self._transport,
            limits=LIMITS,  # used when httpx's own transport is (proxies)
        )
        self._headers = httpx.Headers(
            {
                **config.auth_headers(),
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
                "accept-encoding": "identity",
                "user-agent": USER_AGENT,
            }
        )
        self._urls: dict[str, httpx.URL] = {}

    def busy(self) -> bool:
        """Requests still running on this client (unknown through a proxy: assumed)."""
        if isinstance(self._transport, KeepAliveTransport):
            return self._transport.in_flight > 0
        return True

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Request:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.config.url(path))
        prepared = self._headers
        if headers:
            prepared = httpx.Headers(prepared)
            prepared.update(headers)
        return httpx.Request(method, url, headers=prepared, content=body)


class ClientPool:
    """Each provider's clients, newest first: a provider edited in the admin gets a
    new client, while requests still running (or retrying) with the old settings
    keep theirs. A client pushed out of the last few is closed once it is idle."""

    KEEP = 3

    def __init__(self) -> None:
        self._upstreams: dict[tuple[int, str], list[Upstream]] = {}
        self._retired: set[asyncio.Task[None]] = set()

    def get(self, config: ProviderConfig) -> Upstream:
        key = (id(asyncio.get_running_loop()), config.name)
        kept = self._upstreams.setdefault(key, [])
        for upstream in kept:
            if (upstream.config is config or upstream.config == config) and not (
                upstream.client.is_closed
            ):
                return upstream
        upstream = Upstream(config)
        kept.insert(0, upstream)
        for old in kept[self.KEEP :]:
            task = asyncio.get_running_loop().create_task(_close_when_idle(old))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        del kept[self.KEEP :]
        return upstream

    async def aclose(self) -> int:
        upstreams = [u for kept in self._upstreams.values() for u in kept]
        self._upstreams = {}
        for upstream in upstreams:
            await upstream.client.aclose()
        for task in list(self._retired):
            task.cancel()
        return len(upstreams)


async def _close_when_idle(upstream: Upstream, longest: float = 3600.0) -> None:
    """Close a retired client when no request uses it (or after an hour regardless)."""
    waited = 0.0
    try:
        while waited < longest and upstream.busy():
            await asyncio.sleep(5.0)
            waited += 5.0
    finally:
        await upstream.client.aclose()


def _transport() -> httpx.AsyncBaseTransport | None:
    """The lean transport, or None (httpx's own) when the environment sets a proxy:
    httpx applies environment proxies only to clients built without a transport."""
    if proxy_configured():
        return None
    return KeepAliveTransport(
        max_connections=LIMITS.max_connections, max_idle=LIMITS.max_keepalive_connections
    )


class _NoCookies(httpx.Cookies):
    """Never any cookie: one client serves every caller, so cookies set by an
    upstream must not travel from one caller's request to the next (and reading
    them costs httpx a urllib request object per response)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None


_NO_COOKIES = _NoCookies()


class _Client(httpx.AsyncClient):
    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        return None


pool = ClientPool()
