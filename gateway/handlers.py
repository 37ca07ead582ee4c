"""A lean Django handler for the API paths.

The admin needs sessions, CSRF, auth and messages; API clients use none of
them, yet each of those middlewares costs two thread hops per request (their
hooks are sync), and Django's per-request thread context costs a fresh
executor. The API handler runs the same URLconf and views with only the
API's own async middleware, and without the per-request thread context: the
views are async and reach the database only through the shared
thread-sensitive executor.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

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


class PathDispatcher:
    """API paths to the lean handler, everything else (admin, static) to the full one."""

    def __init__(self, api: Any, site: Any) -> None:
        self.api = api
        self.site = site

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        app = self.api if path == "/v1" or path.startswith(API_PREFIXES) else self.site
        await app(scope, receive, send)
