"""A lean Django handler for the API paths.

The admin needs sessions, CSRF, auth and messages; API clients use none of
them. Django's ASGI handler also hops to a worker thread twice per request
(the `request_started` receivers, and `response.close()` with its
`request_finished` receivers) and spools the body through a temporary file.
The API handler runs the same URLconf and views with only the API's own async
middleware, reads the body into memory (the body-size guard in front of it
bounds it), and runs those signal receivers on the event loop, where they
have no database connection to look after: the API reaches the database only
through `channels.db.database_sync_to_async`, which closes stale connections
in its own thread before and after each use.

A client that goes away is noticed as in Django's own handler (the view is
cancelled), and the request's record is closed as a 499 so the request log,
metrics and dashboard still see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpResponse
from django.urls import set_script_prefix

from . import context

logger = logging.getLogger(__name__)

API_PREFIXES = ("/v1/", "/v1", "/health", "/metrics")


class ApiHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.GATEWAY_API_MIDDLEWARE
        try:
            super().load_middleware(is_async=is_async)
        finally:
            settings.MIDDLEWARE = full

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"the API handler serves HTTP only, not {scope['type']}")
        await self.handle(scope, receive, send)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client left before its request was complete
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body)
        if request is None:
            await self.send_response(error_response, send)
            error_response.close()
            return
        view = asyncio.create_task(self._respond(request, send))
        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait((view, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            listener.cancel()
            if not view.done():
                view.cancel()  # the client went away: stop the work done for it
            response = await _outcome(view)
            ctx = context.current(request)
            if ctx is not None and not ctx.finished:
                ctx.status, ctx.error_type = 499, "client_disconnected"
                context.finish(ctx)
            if response is not None:
                response.close()  # request_finished, on the loop (see the module's docstring)
            else:
                signals.request_finished.send(sender=self.__class__)

    async def _respond(self, request: Any, send: Any) -> HttpResponse:
        response = await self.run_get_response(request)
        # The client may disconnect while the answer is being sent.
        with contextlib.suppress(asyncio.CancelledError):
            await self.send_response(response, send)
        return response


async def _read_body(receive: Any) -> io.BytesIO | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return io.BytesIO(b"".join(chunks))


async def _outcome(view: asyncio.Task[HttpResponse]) -> HttpResponse | None:
    try:
        return await view
    except (asyncio.CancelledError, RequestAborted):
        return None
    except Exception:
        logger.exception("the API view failed outside its error handlers")
        return None


class PathDispatcher:
    """API paths to the lean handler, everything else (admin, static) to the full one."""

    def __init__(self, api: Any, site: Any) -> None:
        self.api = api
        self.site = site

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        app = self.api if path == "/v1" or path.startswith(API_PREFIXES) else self.site
        await app(scope, receive, send)
