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


class Upstream:
    """A provider's pooled client and its prepared request parts."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.client = _Client(
            # Read limits are the callers' (first byte, stream idle, the request's
            # budget), applied around each wait; httpx keeps the connect limit.
            timeout=httpx.Timeout(None, connect=config.timeouts.connect),
            transport=_transport(),
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
    def __init__(self) -> None:
        self._upstreams: dict[tuple[int, str], Upstream] = {}
        self._retired: set[asyncio.Task[None]] = set()

    def get(self, config: ProviderConfig) -> Upstream:
        key = (id(asyncio.get_running_loop()), config.name)
        upstream = self._upstreams.get(key)
        if (
            upstream is not None
            and (upstream.config is config or upstream.config == config)
            and not upstream.client.is_closed
        ):
            return upstream
        if upstream is not None:
            # The provider was edited (URL, key, headers): requests still running
            # keep the old client until they end; then its connections close.
            task = asyncio.get_running_loop().create_task(_close_later(upstream.client))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        upstream = self._upstreams[key] = Upstream(config)
        return upstream

    async def aclose(self) -> int:
        upstreams, self._upstreams = list(self._upstreams.values()), {}
        for upstream in upstreams:
            await upstream.client.aclose()
        for task in list(self._retired):
            task.cancel()
        return len(upstreams)


async def _close_later(client: httpx.AsyncClient, grace: float = 600.0) -> None:
    try:
        await asyncio.sleep(grace)
    finally:
        await client.aclose()


def _transport() -> httpx.AsyncBaseTransport:
    if proxy_configured():
        return httpx.AsyncHTTPTransport(
            retries=0, limits=httpx.Limits(max_connections=512, max_keepalive_connections=128)
        )
    return KeepAliveTransport(max_connections=512, max_idle=128)


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
