"""One keep-alive transport per provider (and event loop), reused.

Each provider's requests are prepared once: its URLs parsed, its headers
(the decrypted key among them) normalised. A request then goes straight to
the provider's transport (httpx's transport API, `handle_async_request`): the
cloud clients use none of what `httpx.AsyncClient` adds around it (redirects,
cookies, auth flows, event hooks), and the read limits are the callers' own
(first byte, first token, stream idle, the request's budget).
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from .config import ProviderConfig
from .connections import Transport

logger = logging.getLogger(__name__)

USER_AGENT = "llm-gateway"


class Upstream:
    """A provider's pooled connections and its prepared request parts."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.transport = Transport(config.url(""))
        self.closed = False
        # httpx's timeout extension: only the connect limit is the transport's.
        self._timeouts = {"connect": config.timeouts.connect, "read": None, "write": None,
                          "pool": None}  # fmt: skip
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
        """Requests still running on these connections."""
        return self.transport.in_flight > 0

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
        return httpx.Request(
            method, url, headers=prepared, content=body, extensions={"timeout": self._timeouts}
        )

    async def send(self, request: httpx.Request) -> httpx.Response:
        """The response once its head is in; its body streams (close it when done)."""
        if self.closed:
            raise httpx.ConnectError("the provider's connections are closed")
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        self.closed = True
        await self.transport.aclose()


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
            if (upstream.config is config or upstream.config == config) and not upstream.closed:
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
            await upstream.aclose()
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
        await upstream.aclose()


pool = ClientPool()
