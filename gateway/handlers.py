"""A lean Django handler for the API paths.

The admin needs sessions, CSRF, auth and messages; API clients use none of
them. Django's ASGI handler also hops to a worker thread twice per request
(the `request_started` receivers, and `response.close()` with its
`request_finished` receivers) and spools the body through a temporary file.
The API handler runs the same URLconf and views with only the API's own async
middleware, reads the body into memory (the body-size guard in front of it
bounds it), and sends no request_started / request_finished signals: their
receivers look after the database connections of the thread they run in, and
the event loop's thread has none. The API reaches the database only through
`channels.db.database_sync_to_async`, which closes stale connections in its own
thread before and after each use.

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

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpResponse
from django.urls import ResolverMatch, get_resolver, set_script_prefix

from . import context
from .edge import checks, drain
from .edge.refusals import refuse
from .errors import error_response

logger = logging.getLogger(__name__)

API_PREFIXES = ("/v1", "/health", "/metrics")


ROUTE_CACHE = 1024


class ApiHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._routes: dict[str, ResolverMatch] = {}
        if any(db.get("ATOMIC_REQUESTS") for db in settings.DATABASES.values()):
            raise ImproperlyConfigured("the API handler does not wrap views in transactions")

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
        refusal = checks.host_refusal(scope) or checks.content_type_refusal(scope)
        if refusal is None and drain.draining():
            refusal = drain.shutting_down()
        if refusal is not None:
            await refuse(scope, send, refusal)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left before its request was complete
        set_script_prefix(get_script_prefix(scope))
        request, bad_request = self.create_request(scope, body)
        if request is None:
            await self.send_response(bad_request, send)
            return
        view = asyncio.create_task(self._respond(request, send))
        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        drain.take_off(view, request)
        try:
            await asyncio.wait((view, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            listener.cancel()
            if not view.done():
                view.cancel()  # the client went away: stop the work done for it
            response = await _outcome(view)
            ctx = context.current(request)
            if response is None and ctx is not None and ctx.interrupted is not None:
                # Shut down before its answer started: a 503 in its envelope.
                response = error_response(ctx.interrupted, ctx.protocol)
                ctx.fail(ctx.interrupted, 503)
                context.finish(ctx)
                with contextlib.suppress(Exception):
                    await self.send_response(response, send)
            if ctx is not None and not ctx.finished:
                ctx.status, ctx.error_type = 499, "client_disconnected"
                context.finish(ctx)
            if response is not None:
                _close(response)
            drain.land(view)

    async def _get_response_async(self, request: Any) -> Any:
        """Django's own, without what the API has none of: view and template
        middleware, ATOMIC_REQUESTS (asserted off at start), and with the URL
        resolution of a path remembered (the API has a handful of paths)."""
        match = self._resolve(request.path_info)
        request.resolver_match = match
        callback = match.func
        if not iscoroutinefunction(callback):  # django-ninja's views here are all async
            callback = sync_to_async(callback, thread_sensitive=True)
        response = await callback(request, *match.args, **match.kwargs)
        self.check_response(response, match.func)
        return response

    def _resolve(self, path: str) -> ResolverMatch:
        match = self._routes.get(path)
        if match is None:
            match = get_resolver().resolve(path)  # Resolver404: Django's 404 handling
            if len(self._routes) >= ROUTE_CACHE:  # /v1/models/{id} takes any name
                self._routes.pop(next(iter(self._routes), path), None)
            self._routes[path] = match
        return match

    async def _respond(self, request: Any, send: Any) -> HttpResponse:
        response = await self.run_get_response(request)
        # The client may disconnect while the answer is being sent.
        with contextlib.suppress(asyncio.CancelledError):
            await self.send_response(response, send)
        return response


def _close(response: HttpResponse) -> None:
    """HttpResponse.close() without its request_finished signal (see above)."""
    for closer in response._resource_closers:
        with contextlib.suppress(Exception):
            closer()
    response._resource_closers.clear()
    response.closed = True


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
        app = self.api if path.startswith(API_PREFIXES) else self.site
        await app(scope, receive, send)
