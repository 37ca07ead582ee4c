"""Guards in front of the API: body size (ASGI) and method errors (Django)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from inference.errors import InvalidRequest, PayloadTooLarge

from .edge.refusals import refuse
from .errors import error_response, request_protocol

Scope = dict[str, Any]


class BodySizeLimit:
    """The body limit at the ASGI level, for any server; under daphne the edge
    guard (gateway.edge.guard) refuses first, before the body is spooled."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = next((v for k, v in scope["headers"] if k.lower() == b"content-length"), None)
        if declared is not None and declared.isdigit():
            if int(declared) > self.limit:
                return await refuse(scope, send, self._error())
            # The server reads exactly the declared length: nothing more to count.
            return await self.app(scope, receive, send)

        received = 0
        refused = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not refused:
                    # A chunked body with no length: answer now and make the app
                    # see a disconnect, so it stops reading and sends nothing.
                    refused = True
                    await refuse(scope, send, self._error())
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counting_receive, send)

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body is larger than the limit of {self.limit} bytes")


class ApiMethodNotAllowed:
    """Django middleware: a wrong method on an API route answers in the API envelope.

    django-ninja answers 405 with an empty body before any exception handler
    runs; API clients expect the same JSON error shape as for every other error.
    """

    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        response = await self.get_response(request)
        if response.status_code == 405 and request.path.startswith("/v1/"):
            error = InvalidRequest(f"method {request.method} is not allowed on {request.path}")
            error.status, error.code = 405, "method_not_allowed"
            replaced = error_response(error, request_protocol(request))
            replaced["Allow"] = response.get("Allow", "")
            return replaced
        return response
