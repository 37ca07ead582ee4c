"""Errors -> HTTP, in one place, in the caller's own protocol envelope.

Views and services raise `inference.errors.GatewayError` subclasses; this
module alone decides the status and the JSON body for OpenAI and Anthropic
callers, for errors raised before a response starts and for in-band errors
sent inside an already-started stream.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import orjson
from django.http import HttpRequest, HttpResponse

from inference import scrub
from inference.errors import GatewayError

logger = logging.getLogger(__name__)

Protocol = Literal["openai", "anthropic"]

_OPENAI_TYPES = {
    "invalid_request": "invalid_request_error",
    "not_found": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "rate_limit": "rate_limit_error",
    "overloaded": "server_error",
    "api_error": "server_error",
}
_ANTHROPIC_TYPES = {
    "invalid_request": "invalid_request_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "rate_limit": "rate_limit_error",
    "overloaded": "overloaded_error",
    "api_error": "api_error",
}


def protocol_for(path: str, headers: Any) -> Protocol:
    """Which envelope a caller expects: from the route, or the anthropic-version header."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/models") and headers.get("anthropic-version"):
        return "anthropic"
    return "openai"


def request_protocol(request: HttpRequest) -> Protocol:
    return protocol_for(request.path, request.headers)


def status_for(error: GatewayError, protocol: Protocol) -> int:
    """OpenAI callers get the status as it is; Anthropic's API answers only 500
    (api_error), 504 (timeout_error) and 529 (overloaded_error) among the 5xx."""
    status = error.status
    if protocol != "anthropic" or status < 500:
        return status
    if error.kind == "overloaded" or status == 529:
        return 529
    return 504 if status == 504 else 500


def _anthropic_type(error: GatewayError) -> str:
    if error.status == 504 and error.kind == "api_error":
        return "timeout_error"
    return _ANTHROPIC_TYPES.get(error.kind, "api_error")


def client_message(error: GatewayError) -> str:
    """The error's text as anyone outside the process may read it (a client, the
    admin's playground page)."""
    # Upstream text may echo the provider key or name internal addresses; the
    # gateway's own messages (which quote client-chosen names) only lose secrets.
    backend = getattr(error, "backend", None)
    if backend is None:
        return scrub.secrets(error.message)
    return scrub.for_client(error.message, backend)


def error_body(error: GatewayError, protocol: Protocol) -> dict[str, Any]:
    message = client_message(error)
    if protocol == "anthropic":
        return {
            "type": "error",
            "error": {
                "type": _anthropic_type(error),
                "message": message,
            },
        }
    return {
        "error": {
            "message": message,
            "type": _OPENAI_TYPES.get(error.kind, "server_error"),
            "param": error.param,
            "code": error.code,
        }
    }


def error_response(error: GatewayError, protocol: Protocol) -> HttpResponse:
    response = HttpResponse(
        orjson.dumps(error_body(error, protocol)),
        status=status_for(error, protocol),
        content_type="application/json",
    )
    retry_after = getattr(error, "retry_after", None)  # ours, or the upstream's
    if retry_after is not None and error.status in (429, 503, 529):
        response["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response

