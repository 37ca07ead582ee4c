"""How an upstream failure is classified: retry it, fail over, count it against the backend."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

from ..errors import GatewayError

Category = Literal["transient", "config", "client"]

_KIND_BY_STATUS = {
    400: "invalid_request",
    404: "not_found",
    413: "request_too_large",
    422: "invalid_request",
    429: "rate_limit",
}


class UpstreamError(GatewayError):
    """One attempt at a backend failed.

    - transient (connection, timeout, 408/409/429/5xx, broken stream): retry,
      then fail over; counts against the backend's circuit breaker.
    - config (401/403/404 from upstream, undecryptable key): fail over at once,
      never retry, does not open the breaker: the backend is not unwell.
    - client (400/413/422: the request itself is wrong): no retry, no failover.
    """

    def __init__(
        self,
        message: str,
        *,
        category: Category,
        backend: str = "",
        upstream_status: int | None = None,
        retry_after: float | None = None,
        status: int | None = None,
        kind: str | None = None,
        code: str | None = None,
        failure: str | None = None,
    ) -> None:
        super().__init__(
            message, status=status or _client_status(category, upstream_status), code=code
        )
        # Where a transport failure struck, for the failover policy: "connection",
        # "connect_timeout", "first_byte_timeout", "first_token_timeout",
        # "idle_timeout" or "budget"; None for an HTTP answer or a broken stream.
        self.failure = failure
        self.category = category
        self.backend = backend
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.kind = kind or _kind(category, upstream_status)

    @property
    def retryable(self) -> bool:
        return self.category == "transient"

    @property
    def fails_over(self) -> bool:
        return self.category != "client"

    @property
    def unhealthy(self) -> bool:
        """Does this failure say the backend is unwell (for the circuit breaker)?"""
        return self.category == "transient"


def _client_status(category: Category, upstream: int | None) -> int:
    if category == "client" and upstream:
        return upstream
    if category == "config":
        return 502  # the gateway's configuration is wrong, not the caller's key
    if upstream in (429, 503, 529):
        return 429 if upstream == 429 else 503
    if upstream and upstream >= 500:
        return 502
    return 502


def _kind(category: Category, upstream: int | None) -> str:
    if category == "client" and upstream:
        return _KIND_BY_STATUS.get(upstream, "invalid_request")
    if upstream == 429:
        return "rate_limit"
    if upstream in (503, 529):
        return "overloaded"
    return "api_error"


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    value: str | None = headers.get("retry-after-ms")  # httpx types get() as Any
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# How upstreams word a prompt over the model's context (OpenAI and compatible
# servers: "maximum context length"; Anthropic: "prompt is too long"): clients key
# their compaction on OpenAI's code, whoever said it.
_CONTEXT_PHRASES = ("context", "prompt is too long")
# And a refusal of the content itself (OpenAI, Azure, Anthropic and others' wording).
_POLICY_PHRASES = ("content policy", "content management policy", "safety system")


def from_response(
    backend: str, response: httpx.Response, message: str, upstream_code: str | None = None
) -> UpstreamError:
    """An upstream's HTTP error; `upstream_code` is the code in its envelope, passed
    on to the caller (OpenAI's `code`, or Anthropic's error type when not generic)."""
    status = response.status_code
    if status in (401, 403):
        category: Category = "config"
        message = (
            f"provider {backend!r} rejected the gateway's credentials (HTTP {status}): {message}"
        )
    elif status == 404:
        category = "config"
        message = f"provider {backend!r} answered 404: {message}"
    elif status in (408, 409, 429) or status >= 500:
        category = "transient"
        message = f"provider {backend!r} answered HTTP {status}: {message}"
    else:
        category = "client"
    lowered = message.lower()
    too_long = status == 400 and any(p in lowered for p in _CONTEXT_PHRASES)
    refused = status == 400 and any(p in lowered for p in _POLICY_PHRASES)
    code = "context_length_exceeded" if too_long else (upstream_code or None)
    if refused and not code:
        code = "content_policy_violation"  # OpenAI's code, whoever said it
    if code and code != "context_length_exceeded" and code not in message:
        # Anthropic's envelope has no code field: the message carries it for them.
        message = f"{message} (code: {code})"
    return UpstreamError(
        message,
        category=category,
        backend=backend,
        upstream_status=status,
        retry_after=retry_after_seconds(response.headers),
        code=code,
    )


def transport_error(backend: str, exc: BaseException, failure: str | None = None) -> UpstreamError:
    """A transport failure; `failure` says where it struck (see UpstreamError)."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        if isinstance(exc, httpx.ConnectTimeout):
            failure = "connect_timeout"
        detail = str(exc) or type(exc).__name__
        return UpstreamError(
            f"provider {backend!r} timed out ({detail})",
            category="transient", backend=backend, status=504, code="upstream_timeout",
            failure=failure,
        )  # fmt: skip
    detail = str(exc) or type(exc).__name__
    return UpstreamError(
        f"provider {backend!r} connection failed: {detail}",
        category="transient", backend=backend, status=502, code="upstream_unreachable",
        failure=failure,
    )  # fmt: skip


# Anthropic's error types that only restate the status: no code worth passing on.
_GENERIC_TYPES = {
    "invalid_request_error", "api_error", "overloaded_error", "rate_limit_error",
    "authentication_error", "permission_error", "not_found_error", "request_too_large",
    "timeout_error", "server_error", "error",
}  # fmt: skip


def error_details(body: bytes) -> tuple[str, str | None]:
    """The message inside either protocol's error envelope (or the raw text), and
    the upstream's error code: OpenAI's `code`, or a specific Anthropic type."""
    import orjson

    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode(errors="replace") or "no body", None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            code = error.get("code")
            if not isinstance(code, str) or not code:
                kind = error.get("type")
                code = kind if isinstance(kind, str) and kind not in _GENERIC_TYPES else None
            return error["message"], code
        if isinstance(error, str):
            return error, None
    return body[:300].decode(errors="replace"), None


def error_message(body: bytes) -> str:
    """The message inside either protocol's error envelope, or the raw text."""
    return error_details(body)[0]
