"""Checks on a request's head, made before its body is read or routed.

Pure functions of the ASGI scope: each returns the error to answer with, or
None. Refusing here costs no body read, no routing and no model lookup.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from inference.errors import GatewayError, InvalidRequest

JSON_TYPES = ("application/json",)


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin1")
    return None


def allowed_hosts() -> list[str]:
    # As Django's HttpRequest.get_host: DEBUG with no list allows localhost.
    hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not hosts:
        return [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def host_refusal(scope: dict[str, Any]) -> GatewayError | None:
    """ALLOWED_HOSTS on the API paths too: a page on another site that resolves
    its own name to this address (DNS rebinding) must not reach /v1 or /metrics."""
    host = header(scope, b"host") or ""
    domain, _ = split_domain_port(host)
    if domain and validate_host(domain, allowed_hosts()):
        return None
    error = InvalidRequest("the Host header names a host this gateway does not serve")
    error.code = "host_not_allowed"
    return error


def content_type_refusal(scope: dict[str, Any]) -> GatewayError | None:
    """A /v1 POST must say it carries JSON: a cross-site page can send a "simple"
    text/plain or form POST without a CORS preflight, never an application/json one."""
    if scope.get("method") != "POST" or not scope["path"].startswith("/v1/"):
        return None
    value = (header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
    if value in JSON_TYPES or (value.startswith("application/") and value.endswith("+json")):
        return None
    error = GatewayError(
        f"Content-Type must be application/json, not {value[:100]!r}"
        if value
        else "Content-Type must be application/json",
        status=415,
    )
    error.kind, error.code = "invalid_request", "unsupported_media_type"
    return error
