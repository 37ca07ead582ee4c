"""The API's own ASGI application, mounted next to Django's for the API paths.

The admin needs sessions, CSRF, auth and messages; API clients use none of
them. Django's ASGI handler also hops to a worker thread for each
`request_started` receiver and again for `response.close()`, and spools the
body through a temporary file. `ApiApplication` serves the API paths with
Django's public pieces only: `ASGIRequest` for the request, the URLconf through
`django.urls.resolve`, the views, a middleware chain of its own (the async
middleware named in GATEWAY_API_MIDDLEWARE, each wrapped like Django wraps
middleware so an exception becomes Django's error response), and the
documented `HttpResponse` interface to send and close the answer. It reads the
body into memory (the body-size guard in front of it bounds it) and sends
`request_started` / `request_finished` on the event loop's thread: their
receivers look after the database connections of the thread they run in, and
the API touches the database only through
`channels.db.database_sync_to_async`, which does the same in its own thread.

A client that goes away is noticed as in Django's own handler (the view is
cancelled), and the request's record is closed as a 499 so the request log,
metrics and dashboard still see it. State: the routes cache is per application
instance, i.e. per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, RequestAborted, RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.exception import convert_exception_to_response
from django.core.signals import request_finished, request_started
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import ResolverMatch, resolve, set_script_prefix
from django.utils.log import log_response
from django.utils.module_loading import import_string

from . import context
from .edge import checks, drain
from .edge.refusals import refuse
from .errors import error_response

logger = logging.getLogger(__name__)

API_PREFIXES = ("/v1", "/health", "/metrics")

ROUTE_CACHE = 1024

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class ApiApplication:
    def __init__(self, middleware: list[str] | None = None) -> None:
        if any(db.get("ATOMIC_REQUESTS") for db in settings.DATABASES.values()):
            raise ImproperlyConfigured("the API application does not wrap views in transactions")
        self._routes: dict[str, ResolverMatch] = {}
        names = settings.GATEWAY_API_MIDDLEWARE if middleware is None else middleware
        self._chain = build_chain(self._view, names)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"the API application serves HTTP only, not {scope['type']}")
        refusal = checks.host_refusal(scope) or checks.content_type_refusal(scope)
        if refusal is None and drain.draining():
            refusal = drain.shutting_down()
        if refusal is not None:
            await refuse(scope, send, refusal)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left before its request was complete
        set_script_prefix(settings.FORCE_SCRIPT_NAME or scope.get("root_path", "") or "")
        request_started.send(sender=type(self), scope=scope)
        request = _create_request(scope, body)
        if isinstance(request, HttpResponse):  # the request could not be made
            await send_response(request, send)
            request.close()
            return
        await self._serve(request, receive, send)

    async def _serve(self, request: HttpRequest, receive: Any, send: Any) -> None:
        view = asyncio.create_task(self._respond(request, send))
        listener = asyncio.create_task(_disconnected(receive))
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
                    await send_response(response, send)
            if ctx is not None and not ctx.finished:
                ctx.status, ctx.error_type = 499, "client_disconnected"
                context.finish(ctx)
            if response is not None:
                response.close()  # its resources, and request_finished
            else:
                request_finished.send(sender=type(self))
            drain.land(view)

    async def _respond(self, request: HttpRequest, send: Any) -> HttpResponseBase:
        response = await self._chain(request)
        if response.status_code >= 400:
            # django-stubs types `response` as HttpResponse; Django logs any response.
            log_response(
                "%s: %s",
                response.reason_phrase,
                request.path,
                response=response,  # type: ignore[arg-type]
                request=request,
            )
        # The client may disconnect while the answer is being sent.
        with contextlib.suppress(asyncio.CancelledError):
            await send_response(response, send)
        return response

    async def _view(self, request: HttpRequest) -> HttpResponseBase:
        """The innermost handler: resolve (Resolver404 becomes Django's 404 in the
        chain's exception wrapper) and call the view; the API has no view or
        template middleware, and ATOMIC_REQUESTS is asserted off at start."""
        match = self._resolve(request.path_info)
        request.resolver_match = match
        callback = match.func
        if not iscoroutinefunction(callback):  # django-ninja's views here are all async
            callback = sync_to_async(callback, thread_sensitive=True)
        response = await callback(request, *match.args, **match.kwargs)
        if not isinstance(response, HttpResponseBase):
            raise ValueError(f"the view {match.view_name} returned {type(response).__name__}")
        return response

    def _resolve(self, path: str) -> ResolverMatch:
        match = self._routes.get(path)
        if match is None:
            match = resolve(path)
            if len(self._routes) >= ROUTE_CACHE:  # /v1/models/{id} takes any name
                self._routes.pop(next(iter(self._routes), path), None)
            self._routes[path] = match
        return match


def build_chain(view: GetResponse, names: list[str]) -> GetResponse:
    """Django's middleware protocol, wired here rather than from settings.MIDDLEWARE
    (which the admin's handler reads): innermost first, each wrapped as Django does."""
    handler = convert_exception_to_response(view)
    for name in reversed(names):
        middleware = import_string(name)
        if not getattr(middleware, "async_capable", False):
            raise ImproperlyConfigured(f"{name}: the API's middleware must be async-capable")
        instance = middleware(handler)
        if not iscoroutinefunction(instance):
            raise ImproperlyConfigured(f"{name}: its instances must be coroutine functions")
        handler = convert_exception_to_response(instance)
    # Each layer was checked to be a coroutine function above.
    return cast(GetResponse, handler)


def _create_request(scope: dict[str, Any], body: io.BytesIO) -> HttpRequest | HttpResponse:
    """The request, or as Django's handler the answer when there is none: an
    undecodable path is a 400, too many fields a 413."""
    try:
        return ASGIRequest(scope, body)
    except UnicodeDecodeError:
        logger.warning("Bad Request (UnicodeDecodeError)", exc_info=True)
        return HttpResponseBadRequest()
    except RequestDataTooBig:
        return HttpResponse("413 Payload too large", status=413)


async def send_response(response: HttpResponseBase, send: Any) -> None:
    """A Django response as ASGI messages, through its documented interface."""
    headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
    headers += [
        (b"Set-Cookie", cookie.output(header="").encode("ascii").strip())
        for cookie in response.cookies.values()
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    if not isinstance(response, StreamingHttpResponse):  # Django's two kinds of response
        assert isinstance(response, HttpResponse)
        await send({"type": "http.response.body", "body": response.content})
        return
    # As Django's handler: __aiter__ (a sync iterator is mapped), closed when left.
    # (An async generator, which django-stubs types as a plain AsyncIterator.)
    async with contextlib.aclosing(aiter(response)) as parts:  # type: ignore[type-var]
        async for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body"})


async def _read_body(receive: Any) -> io.BytesIO | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return io.BytesIO(b"".join(chunks))


async def _disconnected(receive: Any) -> None:
    """Returns when the client has gone (the body has been read: nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _outcome(view: asyncio.Task[HttpResponseBase]) -> HttpResponseBase | None:
    try:
        return await view
    except (asyncio.CancelledError, RequestAborted):
        return None
    except Exception:
        logger.exception("the API view failed outside its error handlers")
        return None


class PathDispatcher:
    """API paths to the API application, everything else (admin, static) to Django's."""

    def __init__(self, api: Any, site: Any) -> None:
        self.api = api
        self.site = site

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        app = self.api if path.startswith(API_PREFIXES) else self.site
        await app(scope, receive, send)
