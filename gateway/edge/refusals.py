"""Every refusal at the edge is counted in /metrics, and logged where a key was presented.

A refusal (413, 415, 431, 408, a Host not allowed, a connection over its cap)
happens before a view opens the request's record. It is counted per reason in
`gateway_edge_refusals_total`; when the caller presented a key the gateway
knows, it also becomes a request-log row of that key (status and error code,
no tokens), through the same request-context listeners as any request. An
unknown or missing key leaves no row: anonymous floods must not fill the log.
The raw HTTP answers the edge guard writes itself (before daphne parses
anything) are made here too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import orjson

from gateway.keys import selectors as keyring
from inference.errors import GatewayError, PayloadTooLarge

from .. import context, metrics
from ..errors import Protocol, error_body, protocol_for, status_for
from ..keys.auth import key_in

logger = logging.getLogger(__name__)

_ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "messages.count_tokens",
}


_REASONS = {
    408: "Request Timeout",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def error(status: int, code: str, message: str) -> GatewayError:
    failure = PayloadTooLarge(message) if status == 413 else GatewayError(message, status=status)
    failure.code = code
    failure.kind = {413: "request_too_large", 503: "overloaded"}.get(status, "invalid_request")
    return failure


def raw_response(status: int, body: bytes, extra: tuple[bytes, ...] = ()) -> bytes:
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}".encode(),
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
        b"Connection: close",
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def both_envelopes(failure: GatewayError) -> bytes:
    """One body that both SDKs read: OpenAI's `error.message/type/code` and
    Anthropic's `type: error` with `error.type/message`."""
    return orjson.dumps(
        {
            "type": "error",
            "error": {
                "type": "overloaded_error",
                "message": failure.message,
                "code": failure.code,
                "param": None,
            },
        }
    )


def endpoint_for(path: str) -> str:
    if path.startswith("/v1/models"):
        return "models"
    return _ENDPOINTS.get(path.rstrip("/"), "other")


_background: set[asyncio.Task[None]] = set()


def in_background(work: Coroutine[Any, Any, None]) -> None:
    """Run the bookkeeping of a refusal made outside the event loop's coroutines."""
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


def count(reason: str, status: int) -> None:
    metrics.child(metrics.EDGE_REFUSALS, reason, str(status)).inc()


async def refused(
    error: GatewayError, status: int, *, protocol: Protocol, path: str, secret: str
) -> None:
    """Count a refusal; log it against the presented key when it is a known one."""
    reason = error.code or error.kind
    count(reason, status)
    if not secret:
        return
    try:
        key = await keyring.afind(secret)
    except Exception:  # the database is away: the count above still stands
        logger.warning("edge refusal: the key could not be looked up", exc_info=True)
        return
    if key is None:
        return
    ctx = context.RequestContext(protocol=protocol, endpoint=endpoint_for(path))
    ctx.api_key = key
    ctx.fail(error, status)
    context.finish(ctx)


def scope_headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope["headers"]}


def envelope(error: GatewayError, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """The refusal's status and JSON body in the caller's protocol."""
    protocol = protocol_for(path, headers)
    return status_for(error, protocol), orjson.dumps(error_body(error, protocol))


async def refuse(scope: dict[str, Any], send: Any, error: GatewayError) -> None:
    """Answer an ASGI request with this refusal (and close the connection, as the
    body may be unread), then count and log it."""
    headers = scope_headers(scope)
    status, body = envelope(error, scope["path"], headers)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
    protocol = protocol_for(scope["path"], headers)
    await refused(error, status, protocol=protocol, path=scope["path"], secret=key_in(headers))
